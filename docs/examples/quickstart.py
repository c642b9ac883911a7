import asyncio

from relaybus import Bus, Message


async def main() -> None:
    # Bus() connects to $RELAYBUS_URL, else redis://localhost:6379/0
    async with Bus() as bus:
        reviewed = asyncio.Event()

        @bus.subscribe("tasks.*", group="reviewers", concurrency=8)
        async def review(msg: Message) -> None:
            print("reviewing", msg.topic, msg.payload)
            reviewed.set()  # returning acknowledges; raising goes to on_failure (retries)

        await bus.publish("tasks.review", {"pr": 42})
        consuming = asyncio.create_task(bus.run())  # delivers until bus.stop()
        await reviewed.wait()
        await bus.stop()  # waits for running handlers and their acks
        await consuming


asyncio.run(main())
