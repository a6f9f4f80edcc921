"""Which routes a middleware applies to, matched on the request's method and path before routing."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Scope


class RouteSet:
    """Routes named by their endpoint's name; `scope in routes` when the request is for one of them."""

    def __init__(self, routes: Iterable[APIRoute]) -> None:
        self._routes = [(route.path_regex, frozenset(route.methods or ())) for route in routes]

    @classmethod
    def named(cls, routers: Iterable[APIRouter], *names: str) -> RouteSet:
        """The routes of these names in the routers (included in the app without a further prefix)."""
        routes = [route for router in routers for route in router.routes]
        found = {route.name: route for route in routes if isinstance(route, APIRoute) and route.name in names}
        if missing := set(names) - set(found):
            raise LookupError(f"no route named {', '.join(sorted(missing))}")
        return cls(found.values())

    def __contains__(self, scope: Scope) -> bool:
        method, path = scope.get("method"), scope["path"]
        return any(method in methods and regex.match(path) for regex, methods in self._routes)
