# -*- test-case-name: tests.test_task_service -*-
"""
One container: its bundle, its runc, its init and exec processes and its
cgroup. The order in which its events leave is its L{ExitOrder}'s
(L{shimd.runc.task.ordering}).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import attr
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError, Message
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from shimd.interfaces import IMounter, IOCIRuntimeFactory, IReaper
from shimd.protos import events_pb2, runc_options_pb2, task_pb2
from shimd.runc.cgroups.errors import CgroupError
from shimd.runc.client import RuncError, Spawner
from shimd.runc.mount import MountError
from shimd.runc.stdio.errors import StdioError
from shimd.runc.stdio.processio import ProcessIO
from shimd.runc.task import errors
from shimd.runc.task.ordering import ExitOrder
from shimd.runc.task.process import ExecProcess, InitProcess, Process
from shimd.runc.task.state import State
from shimd.shim import bootstrap
from shimd.shim.events import timestampFromNanoseconds
from shimd.shim.reaper import Exit
from shimd.ttrpc.status import TTRPCError

CHECKPOINT_OPTIONS_TYPE = "containerd.runc.v1.CheckpointOptions"
DRAIN_TIMEOUT = 2.0
SIGKILL = 9

Publish = Callable[[str, Message], None]


@attr.s(auto_attribs=True, kw_only=True)
class Environment:
    """
    What every container of a shim shares.

    @ivar reaper: reaps the containers' processes.
    @ivar runtime: gives each container its OCI runtime.
    @ivar mounter: mounts and unmounts the containers' rootfs.
    @ivar spawn: starts the stdio's logging binaries.
    @ivar createIO: makes a process's stdio (as
        L{shimd.runc.stdio.create.createIO}).
    @ivar loadCgroup: the cgroup of a pid (as
        L{shimd.runc.cgroups.load.loadCgroup}).
    @ivar publish: queues an event for containerd.
    @ivar oomWatcher: watches containers' cgroups for OOM kills.
    @ivar onOOM: called with a container id when its cgroup reports an OOM.
    """

    reactor: Any
    namespace: str
    reaper: IReaper
    runtime: IOCIRuntimeFactory
    mounter: IMounter
    spawn: Spawner
    createIO: Callable[..., ProcessIO]
    loadCgroup: Callable[[int], Any]
    publish: Publish
    oomWatcher: Any = None
    onOOM: Callable[[str], None] | None = None


def decodeOptions(options: AnyMessage) -> runc_options_pb2.Options:
    """
    The runc options of a C{Create}: empty when none were given. They come
    as C{containerd.runc.v1.Options}, or (from containerd's CRI plugin, for
    a runtime type other than its own runc ones) as a
    C{runtimeoptions.v1.Options} naming a TOML file of them.

    @raise TTRPCError: C{UNKNOWN} for any other type; C{INVALID_ARGUMENT} for
        an options file that cannot be used.
    """
    decoded = runc_options_pb2.Options()
    if not options.type_url:
        return decoded
    try:
        encoded = bootstrap.runcOptions(options.type_url, options.value)
    except bootstrap.OptionsError as e:
        raise errors.invalidArgument(str(e)) from e
    if encoded is None:
        raise errors.unknown(f"type with url {options.type_url}: not found")
    try:
        decoded.ParseFromString(encoded)
    except DecodeError as e:
        raise errors.unknown(f"unmarshal {bootstrap.RUNC_OPTIONS_TYPE}: {e}") from e
    return decoded


def optionsJSON(options: runc_options_pb2.Options) -> bytes:
    """
    C{options.json} as the Go shim writes it: the options' JSON names, in
    field order, leaving out what is unset.
    """
    document = {
        field.name: value
        for field, value in sorted(options.ListFields(), key=lambda f: f[0].number)
    }
    return json.dumps(document, separators=(",", ":")).encode()


def killAllOnExit(bundle: str) -> bool:
    """
    Whether the container's other processes must be killed when its init
    exits: unless it has a pid namespace of its own, in which case the kernel
    does it. True when the spec cannot be read, as in Go.
    """
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        namespaces = spec.get("linux", {}).get("namespaces", []) or []
    except (OSError, ValueError, AttributeError):
        return True
    return not any(
        isinstance(n, dict) and n.get("type") == "pid" and not n.get("path")
        for n in namespaces
    )


def _writePrivate(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _readPid(path: str) -> int:
    """
    The pid runc wrote to a pid file.

    @raise TTRPCError: C{UNKNOWN} when it cannot be read, as in Go (not the
        C{NOT_FOUND} a bare C{ENOENT} would give).
    """
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError) as e:
        raise errors.unknown(f"failed to retrieve OCI runtime pid: {e}") from e


class Container:
    """
    A container and its processes.
    """

    log = Logger()

    def __init__(
        self,
        environment: Environment,
        request: task_pb2.CreateTaskRequest,
        options: runc_options_pb2.Options,
    ) -> None:
        self.environment = environment
        self.id = request.id
        self.bundle = request.bundle
        self.options = options
        self.rootfsMounts = list(request.rootfs)
        self.rootfs = os.path.join(request.bundle, "rootfs")
        self.runc = environment.runtime.runtime(
            options, environment.namespace, request.bundle
        )
        self.init = InitProcess(
            request.id,
            request.stdin,
            request.stdout,
            request.stderr,
            request.terminal,
            checkpoint=request.checkpoint,
            parentCheckpoint=request.parent_checkpoint,
        )
        self.execs: dict[str, ExecProcess] = {}
        self.cgroup: Any = None
        self.killAllOnExit = killAllOnExit(request.bundle)
        self.order = ExitOrder(
            environment.reactor,
            environment.publish,
            lambda: self.execs.values(),
            self._exited,
        )

    # -- creation ---------------------------------------------------------

    async def create(self) -> int:
        """
        Create the container and queue C{/tasks/create}, before any exit of
        its init (which may die at once).

        @return: the init pid (0 for a checkpoint, restored at start).
        """
        self.order.createBegan()
        event: tuple[str, Message] | None = None
        try:
            await self._create()
            io = events_pb2.TaskIO(
                stdin=self.init.stdin,
                stdout=self.init.stdout,
                stderr=self.init.stderr,
                terminal=self.init.terminal,
            )
            event = (
                "/tasks/create",
                events_pb2.TaskCreate(
                    container_id=self.id,
                    bundle=self.bundle,
                    rootfs=self.rootfsMounts,
                    io=io,
                    checkpoint=self.init.checkpoint,
                    pid=self.init.pid,
                ),
            )
        finally:
            self.order.startEnded(None, event)
        return self.init.pid

    async def _create(self) -> None:
        """
        Write the bundle's option files, mount the rootfs, set up stdio and
        run C{runc create} (or, from a checkpoint, leave it to C{Start}).
        """
        _writePrivate(
            os.path.join(self.bundle, "options.json"), optionsJSON(self.options)
        )
        _writePrivate(
            os.path.join(self.bundle, "runtime"), self.options.binary_name.encode()
        )
        if self.rootfsMounts:
            os.makedirs(self.rootfs, mode=0o711, exist_ok=True)
            try:
                self.environment.mounter.mountAll(self.rootfsMounts, self.rootfs)
            except MountError as e:
                raise errors.unknown(e.rootfsMessage) from e
        try:
            io = self._createIO(self.init)
            self.init.io = io
            if self.init.checkpoint:
                return
            await io.prepare()
            pidFile = os.path.join(self.bundle, "init.pid")
            await self._launch(
                self.init,
                lambda: self.runc.create(
                    self.id,
                    self.bundle,
                    pidFile,
                    io.runcStdio,
                    consoleSocket=io.consoleSocket,
                    noPivot=self.options.no_pivot_root,
                    noNewKeyring=self.options.no_new_keyring,
                ),
                pidFile,
            )
        except BaseException:
            await self._cleanUpFailedCreate()
            raise
        self._loadCgroup()

    async def _launch(
        self,
        process: Process,
        run: Callable[[], Deferred[Any]],
        pidFile: str,
    ) -> None:
        """
        Run a runc command that starts a process with the process's stdio
        (C{create}, C{restore} or C{exec}), then connect the stdio, read the
        pid and watch it. Exits reaped meanwhile are kept for it.

        @raise TTRPCError: C{UNKNOWN} with runc's error when it fails.
        """
        io = process.io
        assert io is not None
        launch = self.environment.reaper.launching()
        try:
            running = run()
            io.spawned()
            try:
                await running
            except RuncError as e:
                raise errors.unknown(e.message) from e
            await self._attach(io)
            process.pid = _readPid(pidFile)
            self._watch(process)
        finally:
            launch.done()

    async def _attach(self, io: ProcessIO) -> None:
        try:
            await io.attach()
        except StdioError as e:
            raise errors.unknown(str(e)) from e
        except OSError as e:
            raise errors.unknown(f"failed to start io pipe copy: {e}") from e

    def _createIO(self, process: Process) -> ProcessIO:
        try:
            return self.environment.createIO(
                self.environment.reactor,
                self.environment.spawn,
                self.id,
                self.environment.namespace,
                process.stdin,
                process.stdout,
                process.stderr,
                process.terminal,
                self.options.io_uid,
                self.options.io_gid,
            )
        except (StdioError, OSError) as e:
            raise errors.unknown(f"failed to create process I/O: {e}") from e

    async def _cleanUpFailedCreate(self) -> None:
        if self.init.io is not None:
            await self.init.io.close()
        self._unmountRootfs()

    def _loadCgroup(self) -> None:
        """
        Load the init's cgroup and watch it for OOM kills at once, before
        the container runs its own code: a container the kernel kills
        between C{runc start} and a later watch would leave no C{/tasks/oom}
        (the Go shim's race until containerd 2.3, pull request 12405).
        """
        try:
            self.cgroup = self.environment.loadCgroup(self.init.pid)
        except Exception as e:
            self.log.error(
                "loading the cgroup of container {id} failed: {error}",
                id=self.id,
                error=e,
            )
            return
        watcher = self.environment.oomWatcher
        if watcher is not None and self.environment.onOOM is not None:
            try:
                watcher.add(self.id, self.cgroup, self.environment.onOOM)
            except Exception as e:
                self.log.error("add cg to OOM monitor: {error}", error=e)

    def _unmountRootfs(self) -> None:
        if not self.rootfsMounts:
            return
        try:
            self.environment.mounter.unmountAll(self.rootfs)
        except OSError as e:
            self.log.warn("failed to clean up rootfs mount: {error}", error=e)

    # -- lookups ----------------------------------------------------------

    def process(self, execID: str) -> Process:
        """
        The init process for an empty exec id, or the exec.

        @raise TTRPCError: C{NOT_FOUND} for an unknown exec id.
        """
        if not execID:
            return self.init
        found = self.execs.get(execID)
        if found is None:
            raise errors.notFound(f"process does not exist {execID}")
        return found

    def exec(self, execID: str) -> ExecProcess:
        process = self.process(execID)
        assert isinstance(process, ExecProcess)
        return process

    # -- start ------------------------------------------------------------

    async def start(self, process: Process) -> int:
        """
        Start the init process (or restore it from its checkpoint) or an
        exec, and queue its start event before any exit of it.

        @return: its pid.
        """
        process.refuse("start")
        self.order.startBegan(process)
        event: tuple[str, Message] | None = None
        try:
            if process is self.init:
                await self._startInit()
                event = (
                    "/tasks/start",
                    events_pb2.TaskStart(container_id=self.id, pid=process.pid),
                )
            else:
                assert isinstance(process, ExecProcess)
                await self._startExec(process)
                event = (
                    "/tasks/exec-started",
                    events_pb2.TaskExecStarted(
                        container_id=self.id, exec_id=process.id, pid=process.pid
                    ),
                )
        finally:
            self.order.startEnded(process, event)
        return process.pid

    async def _startInit(self) -> None:
        if self.cgroup is None and self.init.pid:
            self._loadCgroup()
        if self.init.state is State.CREATED_CHECKPOINT:
            await self._restore()
        else:
            try:
                await self.runc.start(self.id)
            except RuncError as e:
                raise errors.unknown(e.message) from e
        if self.init.state in (State.CREATED, State.CREATED_CHECKPOINT):
            self.init.transition(State.RUNNING)
        if self.cgroup is not None:
            self.cgroup.enableControllers()

    async def _restore(self) -> None:
        io = self.init.io
        assert io is not None
        await io.prepare()
        pidFile = os.path.join(self.bundle, "init.pid")
        await self._launch(
            self.init,
            lambda: self.runc.restore(
                self.id,
                self.bundle,
                imagePath=self.init.checkpoint,
                workPath=self.options.criu_work_path
                or os.path.join(self.bundle, "work"),
                pidFile=pidFile,
                stdio=io.runcStdio,
                parentPath=self.init.parentCheckpoint,
                consoleSocket=io.consoleSocket,
                noPivot=self.options.no_pivot_root,
            ),
            pidFile,
        )
        self._loadCgroup()

    async def _startExec(self, process: ExecProcess) -> None:
        process.exit = None
        io = self._createIO(process)
        process.io = io
        spec = dict(process.spec, terminal=process.terminal)
        directory = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        fd, processPath = tempfile.mkstemp(prefix="runc-process", dir=directory)
        pidFile = os.path.join(self.bundle, f"{process.id}.pid")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(spec, f)
            await io.prepare()
            try:
                await self._launch(
                    process,
                    lambda: self.runc.exec(
                        self.id,
                        processPath,
                        pidFile,
                        io.runcStdio,
                        consoleSocket=io.consoleSocket,
                    ),
                    pidFile,
                )
            except TTRPCError:
                if not process.pid:
                    process.startFailed(Exit(0, 255, time.time_ns()))
                    await io.close()
                raise
            if process.state is State.CREATED:
                process.transition(State.RUNNING)
        finally:
            try:
                os.unlink(processPath)
            except OSError:
                pass

    # -- exits ------------------------------------------------------------

    def _watch(self, process: Process) -> None:
        watched = self.environment.reaper.watch(process.pid)
        watched.addCallback(lambda exit: self.processExited(process, exit))
        watched.addErrback(
            lambda failure: self.log.failure("handling an exit failed", failure)
        )

    def processExited(self, process: Process, exit: Exit) -> None:
        """
        A process of this container has been reaped.

        Its exit is recorded (releasing C{Wait}) and published once its
        output has reached the client: copied to the end and read out of
        the fifos, since containerd's client closes its fifos as soon as
        C{Wait} returns and would lose what the copy or the fifo still
        held. (The Go shim reports the exit at once and copies beside it,
        and loses that race now and then.) The wait is given up as soon as
        the output makes no progress for
        L{shimd.runc.stdio.drain.DRAIN_IDLE} seconds (nobody reads it: the
        exit is then reported within about 0.1 s of the
        reaping), and after L{DRAIN_TIMEOUT} seconds in all.

        An OOM kill the watcher has not reported yet is reported first, so
        that C{/tasks/oom} comes before the exit it caused.
        """
        if process.state is State.DELETED:
            return
        self._checkOOM()
        drained = self._drained(process)
        if process is not self.init:
            drained.addCallback(lambda _: self.order.execExited(process, exit))
            return
        paused = self.init.state is State.PAUSED
        self.order.initExited(self.init, exit, killingAll=self.killAllOnExit)
        if self.killAllOnExit:
            killed = self.runc.kill(self.id, SIGKILL, all=True)
            killed.addErrback(
                lambda failure: self.log.debug(
                    "kill --all after init exit: {error}",
                    error=failure.getErrorMessage(),
                )
            )
            killed.addBoth(self._killedAll, paused)
        elif paused:
            self._thaw()

        drained.addCallback(lambda _: self.order.initDrained())

    def _checkOOM(self) -> None:
        """
        Have the OOM watcher report a kill it has not reported yet. A
        failure is logged and never keeps an exit from being reported.
        """
        watcher = self.environment.oomWatcher
        if watcher is None:
            return
        try:
            watcher.check(self.id)
        except Exception:
            self.log.failure("checking container {id} for OOM kills", id=self.id)

    def _killedAll(self, result: object, paused: bool) -> None:
        """
        The rest of the container has been killed; thaw it if it was paused
        (the SIGKILLs land as it thaws), as the Go shim does.
        """
        if paused:
            self._thaw()
        self.order.killedAll()

    def _thaw(self) -> None:
        self.runc.resume(self.id).addErrback(
            lambda failure: self.log.warn(
                "resume of exited container failed: {error}",
                error=failure.getErrorMessage(),
            )
        )

    def _drained(self, process: Process) -> Deferred[None]:
        if process.io is None:
            return succeed(None)
        return process.io.waitDrained(DRAIN_TIMEOUT)

    def publish(self, topic: str, event: Message) -> None:
        """
        Queue an event of this container, after the events of any start in
        progress.
        """
        self.order.publish(topic, event)

    def _exited(self, process: Process, exit: Exit) -> None:
        """
        Record a process's exit (releasing C{Wait}) and publish it.
        """
        process.setExited(exit)
        self._publishExit(process, exit)

    def _publishExit(self, process: Process, exit: Exit) -> None:
        event = events_pb2.TaskExit(
            container_id=self.id,
            id=process.id,
            pid=exit.pid,
            exit_status=exit.status,
            exited_at=timestampFromNanoseconds(exit.exitedAt),
        )
        self.order.publish("/tasks/exit", event)

    # -- the other calls --------------------------------------------------

    async def delete(self, process: Process) -> None:
        """
        Delete a process: wait (bounded) for its output, close its stdio;
        for init, C{runc delete} and unmount the rootfs too.
        """
        if process is self.init:
            self.init.refuseDelete()
        else:
            process.refuse("delete")
        self.order.deleteBegan(process)
        try:
            await self._delete(process)
        finally:
            self.order.deleteEnded(process)

    async def _delete(self, process: Process) -> None:
        if process.io is not None:
            await process.io.waitDrained(DRAIN_TIMEOUT)
        if process is self.init:
            if self.init.pid:
                try:
                    await self.runc.delete(self.id)
                except RuncError as e:
                    if "does not exist" not in str(e):
                        message = self.runc.lastError() or str(e)
                        raise errors.unknown(f"failed to delete task: {message}") from e
            if self.order.initExitPending():
                self.order.finishInitExit()
        if process.io is not None:
            await process.io.close()
        process.deleted()
        if process is self.init:
            self._unmountRootfs()
            if self.environment.oomWatcher is not None:
                self.environment.oomWatcher.remove(self.id)
        else:
            self.execs.pop(process.id, None)
            try:
                os.unlink(os.path.join(self.bundle, f"{process.id}.pid"))
            except OSError:
                pass

    async def kill(self, process: Process, signal: int, all: bool) -> None:
        if isinstance(process, ExecProcess):
            process.refuseKill()
            try:
                os.kill(process.pid, signal)
            except ProcessLookupError as e:
                raise errors.notFound("process already finished") from e
            except OSError as e:
                raise errors.unknown(f"exec kill error: {e}") from e
            return
        self.init.refuseKill()
        try:
            await self.runc.kill(self.id, signal, all=all)
        except RuncError as e:
            text = str(e)
            if any(
                reason in text
                for reason in (
                    "process already finished",
                    "container not running",
                    "no such process",
                )
            ):
                raise errors.notFound("process already finished") from e
            if "does not exist" in text:
                raise errors.notFound("no such container") from e
            raise errors.unknown(f"unknown error after kill: {text}") from e

    def addExec(self, request: task_pb2.ExecProcessRequest) -> ExecProcess:
        """
        Register an exec in the created state; nothing runs until C{Start}.
        """
        if request.exec_id in self.execs:
            raise errors.alreadyExists(f"id {request.exec_id}")
        self.init.refuse("exec")
        try:
            spec = json.loads(request.spec.value or b"{}")
        except ValueError as e:
            raise errors.invalidArgument(f"exec spec is not JSON: {e}") from e
        if not isinstance(spec, dict):
            raise errors.invalidArgument("exec spec is not a JSON object")
        process = ExecProcess(
            request.exec_id,
            spec,
            request.stdin,
            request.stdout,
            request.stderr,
            request.terminal,
        )
        self.execs[request.exec_id] = process
        return process

    async def pause(self) -> None:
        self.init.refuse("pause")
        self.init.transition(State.PAUSING)
        try:
            await self.runc.pause(self.id)
        except RuncError as e:
            if self.init.state is State.PAUSING:
                self.init.transition(State.RUNNING)
            raise errors.unknown(e.message) from e
        if self.init.state is State.PAUSING:
            self.init.transition(State.PAUSED)

    async def resume(self) -> None:
        self.init.refuse("resume")
        try:
            await self.runc.resume(self.id)
        except RuncError as e:
            raise errors.unknown(e.message) from e
        if self.init.state is State.PAUSED:
            self.init.transition(State.RUNNING)

    async def update(self, resources: AnyMessage) -> None:
        self.init.refuse("update")
        try:
            document = json.loads(resources.value or b"{}")
        except ValueError as e:
            raise errors.invalidArgument(f"resources are not JSON: {e}") from e
        try:
            await self.runc.update(self.id, json.dumps(document).encode())
        except RuncError as e:
            raise errors.unknown(e.message) from e

    async def checkpoint(self, path: str, options: AnyMessage) -> None:
        self.init.refuse("checkpoint")
        decoded = runc_options_pb2.CheckpointOptions()
        if options.type_url:
            if options.type_url != CHECKPOINT_OPTIONS_TYPE:
                raise errors.unknown(f"type with url {options.type_url}: not found")
            decoded.ParseFromString(options.value)
        work = decoded.work_path or os.path.join(self.bundle, "work", "criu-work")
        try:
            await self.runc.checkpoint(
                self.id,
                imagePath=path,
                workPath=work,
                openTCP=decoded.open_tcp,
                externalUnixSockets=decoded.external_unix_sockets,
                terminal=decoded.terminal,
                fileLocks=decoded.file_locks,
                emptyNamespaces=list(decoded.empty_namespaces),
                leaveRunning=not decoded.exit,
            )
        except RuncError as e:
            dumpLog = os.path.join(self.bundle, "criu-dump.log")
            try:
                shutil.copyfile(os.path.join(work, "dump.log"), dumpLog)
            except OSError as copyError:
                self.log.error(
                    "failed to copy dump.log to criu-dump.log: {error}",
                    error=copyError,
                )
            firstLine = str(e).split("\n", 1)[0]
            raise errors.unknown(f"{firstLine} path= {dumpLog}") from e
        finally:
            if not decoded.work_path:
                shutil.rmtree(work, ignore_errors=True)

    async def pids(self) -> list[tuple[int, str]]:
        """
        The container's processes: each host pid, with its exec id when it
        is an exec's.
        """
        try:
            pids = await self.runc.ps(self.id)
        except RuncError as e:
            raise errors.unknown(str(e)) from e
        execPids = {e.pid: e.id for e in self.execs.values() if e.pid}
        return [(pid, execPids.get(pid, "")) for pid in pids]

    def resize(self, process: Process, width: int, height: int) -> None:
        process.refuse("resize")
        if process.io is not None:
            process.io.resize(width, height)

    def closeIO(self, process: Process) -> None:
        if process.io is not None:
            process.io.closeStdin()

    def stats(self) -> AnyMessage:
        if self.cgroup is None:
            raise errors.notFound("cgroup does not exist")
        try:
            metrics = self.cgroup.stats()
        except (OSError, CgroupError) as e:
            raise errors.unknown(f"failed to read cgroup stats: {e}") from e
        return AnyMessage(
            type_url=self.cgroup.typeURL, value=metrics.SerializeToString()
        )

    def hasProcesses(self) -> bool:
        return self.init.state is not State.DELETED
