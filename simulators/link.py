"""The OPC UA session every simulated client opens to the gateway (a PLC, the operator's HMI, the
planner): a :class:`Link` connects on demand and again after it breaks, a :class:`Persistence` retries
with back-off until the gateway answers, and the errors that tell a caller to try again
(:class:`LinkDown`) or that a node is not there (:class:`NotPublished`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua

from simulators.scenario import Account, PlcSettings

NS_URI = "urn:cell-gateway"

# asyncua logs every lost connection and refused request at WARNING or above; a simulation that
# causes them on purpose keeps its own account of them instead.
for _name in ("asyncua", "asyncua.client", "asyncua.client.ua_client", "asyncua.client.client"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


class LinkDown(Exception):
    """The connection is not usable; the caller reconnects and tries again."""


class NotPublished(Exception):
    """The node is not in the gateway's address space (e.g. a job that is closed or done and left it)."""


class SimulationError(RuntimeError):
    """Something the simulation cannot carry on from (a report that never got an answer)."""


@dataclass(slots=True)
class CallAnswer:
    status: str
    outputs: list[Any]


def status_name(code: ua.StatusCode) -> str:
    return "Good" if code.is_good() else str(code.name)


class Link:
    """One OPC UA session of a virtual PLC, opened on demand and opened again after it breaks."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        account: Account,
        settings: PlcSettings,
        *,
        hold: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hold = hold or nullcontext
        self.name = name
        self.account = account
        self.settings = settings
        self.ns = 0
        self.connects = 0
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:  # another task connected while this one waited
                return self._client  # type: ignore[unreachable]
            # The client's own watchdog would take a slow answer for a dead server; the PLC's call
            # timeout decides that here.
            client = Client(self.endpoint, timeout=self.settings.call_timeout, watchdog_intervall=30.0)
            client.name = client.description = f"cell-sim {self.name}"
            client.session_timeout = 60_000
            if self.account.user:
                client.set_user(self.account.user)
                client.set_password(self.account.password)
            try:
                # Logging in costs the gateway an argon2 verification (~0.3 s of its event loop): at
                # hundreds of times real speed that would be hours of lost production, so simulated
                # time stands still meanwhile (the summary reports how long).
                with self.hold():
                    async with asyncio.timeout(self.settings.connect_timeout):
                        await client.connect()
                        self.ns = await client.get_namespace_index(NS_URI)
            except Exception as exc:
                await _discard(client)
                raise LinkDown(f"connect: {exc!r}") from None
            self.connects += 1
            self._client = client
            return client

    async def drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _discard(client)

    def abort(self) -> None:
        """Cut the connection at once, as a pulled cable would (the session stays for the server to expire)."""
        client = self._client
        protocol = getattr(client.uaclient, "protocol", None) if client is not None else None
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()

    def node_id(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)

    async def call(self, obj: str, method: str, inputs: Sequence[ua.Variant], *, cut: bool = False) -> CallAnswer:
        """Call ``obj/method``; ``cut`` cuts the connection right after the request went out."""
        client = await self.client()
        request = ua.CallMethodRequest(
            ObjectId=self.node_id(obj), MethodId=self.node_id(f"{obj}/{method}"), InputArguments=list(inputs)
        )
        try:
            if cut:
                task = asyncio.ensure_future(client.uaclient.call([request]))
                await asyncio.sleep(0)  # the request is written to the socket before the call awaits its answer
                if not task.done():
                    self.abort()
                with suppress(Exception):
                    await task
                raise LinkDown("connection cut after sending (fault: retry)")
            async with asyncio.timeout(self.settings.call_timeout):
                (result,) = await client.uaclient.call([request])
        except LinkDown:
            await self.drop()
            raise
        except (TimeoutError, OSError, ua.UaError, asyncio.IncompleteReadError) as exc:
            await self.drop()
            raise LinkDown(f"{method}: {exc!r}") from None
        except Exception as exc:  # asyncua raises plain Exceptions for some transport errors
            await self.drop()
            raise LinkDown(f"{method}: {exc!r}") from None
        return CallAnswer(status_name(result.StatusCode), [v.Value for v in result.OutputArguments or []])

    async def read(self, path: str) -> Any:
        client = await self.client()
        try:
            async with asyncio.timeout(self.settings.call_timeout):
                return await client.get_node(self.node_id(path)).read_value()
        except ua.uaerrors.BadNodeIdUnknown:
            raise NotPublished(path) from None  # the link is fine: the node is not there
        except Exception as exc:
            await self.drop()
            raise LinkDown(f"read {path}: {exc!r}") from None

    async def write(self, values: Sequence[tuple[str, ua.Variant]]) -> list[str]:
        client = await self.client()
        params = ua.WriteParameters()
        for path, variant in values:
            item = ua.WriteValue()
            item.NodeId = self.node_id(path)
            item.AttributeId = ua.AttributeIds.Value
            item.Value = ua.DataValue(variant)
            params.NodesToWrite.append(item)
        try:
            async with asyncio.timeout(self.settings.call_timeout):
                results = await client.uaclient.write(params)
        except Exception as exc:
            await self.drop()
            raise LinkDown(f"write: {exc!r}") from None
        return [status_name(r) for r in results]


async def _discard(client: Client) -> None:
    try:
        async with asyncio.timeout(2.0):
            await client.disconnect()
    except Exception:  # the server may be gone: the socket is closed below either way
        pass
    finally:
        with suppress(Exception):
            client.disconnect_socket()


class Persistence:
    """Retries with back-off until something works, within ``give_up_after`` wall seconds."""

    def __init__(self, settings: PlcSettings, what: str) -> None:
        self.settings = settings
        self.what = what
        self.started = time.monotonic()
        self.pause = settings.backoff[0]
        self.attempts = 0
        self.last_error = ""

    async def failed(self, error: str) -> None:
        self.attempts += 1
        self.last_error = error
        if time.monotonic() - self.started > self.settings.give_up_after:
            raise SimulationError(
                f"{self.what}: no answer after {self.attempts} attempts in {self.settings.give_up_after:.0f} s "
                f"(last: {error})"
            )
        await asyncio.sleep(self.pause)  # a PLC's retry interval, in wall time
        self.pause = min(self.pause * 2, self.settings.backoff[1])
