"""Name -> class registries. One per concept, defined next to what it holds."""
import inspect

from .errors import ConfigError


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, obj=None, name=None):
        """Use as ``@REG.register`` or ``@REG.register(name="Alias")``."""
        def add(o):
            key = name or o.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = o
            return o
        return add(obj) if obj is not None else add

    def names(self):
        return sorted(self._items)

    def __contains__(self, name):
        return name in self._items

    def get(self, name):
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self._items[name]

    def build(self, cfg, where="", **injected):
        """Build from ``{"name": ..., **kwargs}``; ``injected`` fills arguments the config
        does not set (e.g. num_classes) and is passed only to a callable that names it (never
        through ``**kwargs``, which may forward to third-party constructors)."""
        where = where or self.kind
        if not isinstance(cfg, dict) or "name" not in cfg:
            raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        obj = self.get(cfg["name"])
        params = inspect.signature(obj).parameters
        for k, v in injected.items():
            if k not in kwargs and k in params and params[k].kind != params[k].VAR_KEYWORD:
                kwargs[k] = v
        kwargs = check_kwargs(obj, kwargs, f"{where} ({cfg['name']})", path=where)
        return obj(**kwargs)


def check_kwargs(fn, kwargs, where, path=None):
    """Fail on unknown or missing keyword arguments, naming the accepted ones, and on values
    outside the Fields ``fn`` declares with ``config.check_args`` (naming ``<path or where>.<key>``).
    Returns ``kwargs`` with the checked values."""
    params = inspect.signature(fn).parameters
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted: {accepted}")
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    fields = getattr(fn, "arg_fields", {})
    return {k: fields[k].check(v, f"{path or where}.{k}") if k in fields else v for k, v in kwargs.items()}
