"""Contracts across processes: the internal route that serves one, the generated client that calls it.

In split mode a module's contract is served by the service that runs the module (`internal_router`)
and called by the others through `RemoteContracts.client(...)`, an object with the contract's methods.
"""

from splitstone.kernel.remote.client import RemoteClient, RemoteContracts, client_class, rebuild_error
from splitstone.kernel.remote.server import internal_router
from splitstone.kernel.remote.wire import (
    PREFIX,
    SERVICE_NAME_HEADER,
    SERVICE_TOKEN_HEADER,
    InvalidServiceCredential,
    ServiceCredentialRequired,
    UnknownOperation,
)

__all__ = [
    "PREFIX",
    "SERVICE_NAME_HEADER",
    "SERVICE_TOKEN_HEADER",
    "InvalidServiceCredential",
    "RemoteClient",
    "RemoteContracts",
    "ServiceCredentialRequired",
    "UnknownOperation",
    "client_class",
    "internal_router",
    "rebuild_error",
]
