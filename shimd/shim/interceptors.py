# -*- test-case-name: tests.test_service -*-
"""
The ttrpc server interceptor hook: every method of the services the shim
serves, wrapped by the plugins that provide L{ITTRPCInterceptor}.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from shimd.interfaces import ITTRPCInterceptor
from shimd.ttrpc.server import CallContext, Handler, ServiceRegistry


def chain(handler: Handler, interceptors: Sequence[ITTRPCInterceptor]) -> Handler:
    """
    C{handler} behind C{interceptors}, the first outermost.
    """
    for interceptor in reversed(interceptors):
        handler = partial(_intercept, interceptor, handler)
    return handler


def _intercept(
    interceptor: ITTRPCInterceptor,
    proceed: Handler,
    request: Any,
    context: CallContext,
) -> object:
    return interceptor.intercept(request, context, proceed)


class _Intercepted:
    """
    A service implementation whose methods go through the interceptors.
    """

    def __init__(
        self, implementation: object, interceptors: Sequence[ITTRPCInterceptor]
    ) -> None:
        self._implementation = implementation
        self._interceptors = interceptors

    def __getattr__(self, name: str) -> Handler | None:
        handler = getattr(self._implementation, name, None)
        if handler is None:
            return None
        return chain(handler, self._interceptors)


class InterceptingRegistry(ServiceRegistry):
    """
    A L{ServiceRegistry} whose handlers go through the interceptors, when
    there are any.
    """

    def __init__(self, interceptors: Sequence[ITTRPCInterceptor]) -> None:
        super().__init__()
        self._interceptors = list(interceptors)

    def register(
        self,
        descriptor: ServiceDescriptor,
        implementation: object,
        name: str | None = None,
    ) -> None:
        """
        L{ServiceRegistry.register}, through the interceptors.
        """
        if self._interceptors:
            implementation = _Intercepted(implementation, self._interceptors)
        super().register(descriptor, implementation, name)
