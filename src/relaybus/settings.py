"""Plugin-owned settings: each `plugin_settings()` model adds its fields to the bus's
configuration - `Bus.from_url` keywords and `RELAYBUS_<NAME>` variables - validated by
that model, so a third-party plugin has settings as the built-ins do, and a name that
nobody declares is still refused. `subscription_options()` models do the same for the
extra keywords of `subscribe`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from . import hookspecs
from .errors import ConfigError, PluginError

if TYPE_CHECKING:
    from .config import BusConfig

ENV_PREFIX = "RELAYBUS_"


@dataclass(frozen=True, slots=True)
class Owner:
    """The plugin that declared a setting, and its model."""

    plugin: str
    model: type[BaseModel]


def owners(
    answers: Iterable[tuple[str, Any]], core: Iterable[str], hook: str, kind: str = "setting"
) -> dict[str, Owner]:
    """Each declared name's owner, from a hook's (plugin, model or None) answers;
    ConfigError when a name has two owners or is the core's own."""
    taken = set(core)
    found: dict[str, Owner] = {}
    for plugin, model in answers:
        if model is None:
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(
                f"plugin {plugin!r}: {hook} must return a pydantic model class or None, not {model!r}"
            )
        for name in model.model_fields:
            if name in taken:
                raise ConfigError(f"plugin {plugin!r} declares the {kind} {name!r}, which is relaybus's own")
            if name in found and found[name].model is not model:
                raise ConfigError(
                    f"the {kind} {name!r} is declared by two plugins: {found[name].plugin!r} and {plugin!r}"
                )
            found[name] = Owner(plugin, model)
    return found


@cache
def installed(disabled: frozenset[str], core: frozenset[str]) -> Mapping[str, Owner]:
    """The settings of every installed plugin not disabled (built-ins and entry points,
    loaded once)."""
    from .plugins import PluginManager

    plugins = PluginManager(disabled)
    plugins.load()
    return owners(plugins.call(hookspecs.plugin_settings), core, "plugin_settings")


def unknown_names(given: Iterable[str], known: Iterable[str]) -> list[str]:
    """Each of `given` not in `known`, quoted, with the closest known name if any."""
    names = list(known)
    return [
        f"{name!r}"
        + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, names, n=1)) else "")
        for name in given
        if name not in names
    ]


def options(given: Mapping[str, Any], declared: Mapping[str, Owner], known: Iterable[str]) -> dict[str, Any]:
    """`subscribe`'s extra keywords validated by the models declaring them, with those
    models' defaults for the rest: TypeError for an unknown one (as for any keyword),
    ConfigError for an invalid value."""
    unknown = unknown_names(given, [*declared, *known])
    if unknown:
        raise TypeError(
            f"subscribe() got unknown option {', '.join(unknown)}: neither relaybus nor an "
            "enabled plugin declares it"
        )
    values: dict[str, Any] = {}
    for model in {o.model: o.plugin for o in declared.values()}:
        try:
            values.update(
                model.model_validate({k: v for k, v in given.items() if k in model.model_fields}).model_dump()
            )
        except ValidationError as exc:
            raise ConfigError(
                "; ".join(
                    f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                    for err in exc.errors(include_input=False)
                )
            ) from None
    return values


def validate(
    config: BusConfig, given: Mapping[str, Any], declared: Mapping[str, Owner]
) -> dict[type[BaseModel], BaseModel]:
    """Each plugin model validated from `given` keywords over RELAYBUS_ variables over
    its defaults; its validators see the core settings as `info.context["config"]`.
    ValueError naming every unknown or invalid setting."""
    unknown = unknown_names(sorted(set(given) - set(declared)), [*declared, *type(config).model_fields])
    if unknown:
        raise ValueError(
            f"unknown setting {', '.join(unknown)}: neither relaybus nor an enabled plugin declares it"
        )
    models: dict[type[BaseModel], str] = {o.model: o.plugin for o in declared.values()}
    return {model: of(model, config, given, plugin) for model, plugin in models.items()}


def of(model: type[BaseModel], config: BusConfig, given: Mapping[str, Any], plugin: str) -> BaseModel:
    """`model` validated from `given` over RELAYBUS_ variables over its defaults."""
    values = {**_from_env(model), **{k: v for k, v in given.items() if k in model.model_fields}}
    try:
        return model.model_validate(values, context={"config": config})
    except ValidationError as exc:
        raise ValueError(
            "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) + ': ' if err['loc'] else ''}"
                f"{err['msg'].removeprefix('Value error, ')} (a setting of plugin {plugin!r})"
                for err in exc.errors(include_input=False)
            )
        ) from None


def _from_env(model: type[BaseModel]) -> dict[str, Any]:
    """RELAYBUS_<NAME> values for the model's fields, decoded as pydantic-settings does
    for the core's (JSON for lists and dicts)."""
    carrier = type(
        f"{model.__name__}FromEnv",
        (BaseSettings, model),
        {"model_config": SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")},
    )
    return dict(EnvSettingsSource(carrier)())
