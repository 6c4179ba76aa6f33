# -*- test-case-name: tests.test_protos -*-
"""
Wire-format tests for the schemas in L{shimd.protos}.

Every expected byte string here was written by hand from containerd 1.6.20's
field tables (or, for bootstrap and introspection, from containerd 2.x's), or
copied from bytes observed between containerd and the Go runc v2 shim. The
schema tables were checked against the Go C{.proto} files.
"""

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from twisted.trial.unittest import SynchronousTestCase

from shimd.protos import (
    bootstrap_pb2,
    cgroups_v1_pb2,
    cgroups_v2_pb2,
    events_pb2,
    events_service_pb2,
    introspection_pb2,
    mount_pb2,
    runc_options_pb2,
    status_pb2,
    task_pb2,
    task_types_pb2,
    ttrpc_pb2,
)

# Go's zero time.Time (0001-01-01T00:00:00Z) in Unix seconds.
GO_ZERO_TIME = -62135596800


def _ld(field: int, payload: bytes) -> bytes:
    """
    Hand-encode a short length-delimited field (number < 16, length < 128).
    """
    assert field < 16 and len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


# -- schema tables ---------------------------------------------------------

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def _kind(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return _SCALARS[field.type]


def _signature(descriptor) -> str:
    """
    Describe a message's fields as C{"<number> <name> <type>"} entries joined
    by C{", "}, in declaration order.
    """
    parts = []
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields
            kind = f"map<{_kind(key)},{_kind(value)}>"
        elif field.is_repeated:
            kind = "repeated " + _kind(field)
        elif field.message_type is None and field.has_presence:
            kind = "optional " + _kind(field)
        else:
            kind = _kind(field)
        parts.append(f"{field.number} {field.name} {kind}")
    return ", ".join(parts)


def _run(first: int, kind: str, names: str) -> str:
    """
    Build a signature for consecutively numbered fields of one type.
    """
    return ", ".join(
        f"{number} {name} {kind}"
        for number, name in enumerate(names.split(), start=first)
    )


ANY = "google.protobuf.Any"
TIMESTAMP = "google.protobuf.Timestamp"
ID_EXEC = "1 id string, 2 exec_id string"

SCHEMAS = {
    status_pb2: {
        "Status": f"1 code int32, 2 message string, 3 details repeated {ANY}",
    },
    ttrpc_pb2: {
        "Request": "1 service string, 2 method string, 3 payload bytes, "
        "4 timeout_nano int64, 5 metadata repeated ttrpc.KeyValue",
        "Response": "1 status google.rpc.Status, 2 payload bytes",
        "KeyValue": "1 key string, 2 value string",
    },
    mount_pb2: {
        "Mount": "1 type string, 2 source string, 3 target string, "
        "4 options repeated string",
    },
    task_types_pb2: {
        "ProcessInfo": f"1 pid uint32, 2 info {ANY}",
    },
    task_pb2: {
        "CreateTaskRequest": "1 id string, 2 bundle string, "
        "3 rootfs repeated containerd.types.Mount, 4 terminal bool, "
        "5 stdin string, 6 stdout string, 7 stderr string, 8 checkpoint string, "
        f"9 parent_checkpoint string, 10 options {ANY}",
        "CreateTaskResponse": "1 pid uint32",
        "DeleteRequest": ID_EXEC,
        "DeleteResponse": "1 pid uint32, 2 exit_status uint32, "
        f"3 exited_at {TIMESTAMP}",
        "ExecProcessRequest": f"{ID_EXEC}, 3 terminal bool, 4 stdin string, "
        f"5 stdout string, 6 stderr string, 7 spec {ANY}",
        "ExecProcessResponse": "",
        "ResizePtyRequest": f"{ID_EXEC}, 3 width uint32, 4 height uint32",
        "StateRequest": ID_EXEC,
        "StateResponse": "1 id string, 2 bundle string, 3 pid uint32, "
        "4 status containerd.v1.types.Status, 5 stdin string, 6 stdout string, "
        "7 stderr string, 8 terminal bool, 9 exit_status uint32, "
        f"10 exited_at {TIMESTAMP}, 11 exec_id string",
        "KillRequest": f"{ID_EXEC}, 3 signal uint32, 4 all bool",
        "CloseIORequest": f"{ID_EXEC}, 3 stdin bool",
        "PidsRequest": "1 id string",
        "PidsResponse": "1 processes repeated containerd.v1.types.ProcessInfo",
        "CheckpointTaskRequest": f"1 id string, 2 path string, 3 options {ANY}",
        "UpdateTaskRequest": f"1 id string, 2 resources {ANY}, "
        "3 annotations map<string,string>",
        "StartRequest": ID_EXEC,
        "StartResponse": "1 pid uint32",
        "WaitRequest": ID_EXEC,
        "WaitResponse": f"1 exit_status uint32, 2 exited_at {TIMESTAMP}",
        "StatsRequest": "1 id string",
        "StatsResponse": f"1 stats {ANY}",
        "ConnectRequest": "1 id string",
        "ConnectResponse": "1 shim_pid uint32, 2 task_pid uint32, 3 version string",
        "ShutdownRequest": "1 id string, 2 now bool",
        "PauseRequest": "1 id string",
        "ResumeRequest": "1 id string",
    },
    events_pb2: {
        "TaskCreate": "1 container_id string, 2 bundle string, "
        "3 rootfs repeated containerd.types.Mount, "
        "4 io containerd.events.TaskIO, 5 checkpoint string, 6 pid uint32",
        "TaskStart": "1 container_id string, 2 pid uint32",
        "TaskDelete": "1 container_id string, 2 pid uint32, 3 exit_status uint32, "
        f"4 exited_at {TIMESTAMP}, 5 id string",
        "TaskIO": "1 stdin string, 2 stdout string, 3 stderr string, 4 terminal bool",
        "TaskExit": "1 container_id string, 2 id string, 3 pid uint32, "
        f"4 exit_status uint32, 5 exited_at {TIMESTAMP}",
        "TaskOOM": "1 container_id string",
        "TaskExecAdded": "1 container_id string, 2 exec_id string",
        "TaskExecStarted": "1 container_id string, 2 exec_id string, 3 pid uint32",
        "TaskPaused": "1 container_id string",
        "TaskResumed": "1 container_id string",
        "TaskCheckpointed": "1 container_id string, 2 checkpoint string",
    },
    events_service_pb2: {
        "ForwardRequest": "1 envelope containerd.services.events.ttrpc.v1.Envelope",
        "Envelope": f"1 timestamp {TIMESTAMP}, 2 namespace string, "
        f"3 topic string, 4 event {ANY}",
    },
    runc_options_pb2: {
        "Options": "1 no_pivot_root bool, 2 no_new_keyring bool, "
        "3 shim_cgroup string, 4 io_uid uint32, 5 io_gid uint32, "
        "6 binary_name string, 7 root string, 8 criu_path string, "
        "9 systemd_cgroup bool, 10 criu_image_path string, "
        "11 criu_work_path string",
        "CheckpointOptions": "1 exit bool, 2 open_tcp bool, "
        "3 external_unix_sockets bool, 4 terminal bool, 5 file_locks bool, "
        "6 empty_namespaces repeated string, 7 cgroups_mode string, "
        "8 image_path string, 9 work_path string",
        "ProcessDetails": "1 exec_id string",
    },
    cgroups_v1_pb2: {
        "Metrics": "1 hugetlb repeated io.containerd.cgroups.v1.HugetlbStat, "
        "2 pids io.containerd.cgroups.v1.PidsStat, "
        "3 cpu io.containerd.cgroups.v1.CPUStat, "
        "4 memory io.containerd.cgroups.v1.MemoryStat, "
        "5 blkio io.containerd.cgroups.v1.BlkIOStat, "
        "6 rdma io.containerd.cgroups.v1.RdmaStat, "
        "7 network repeated io.containerd.cgroups.v1.NetworkStat, "
        "8 cgroup_stats io.containerd.cgroups.v1.CgroupStats, "
        "9 memory_oom_control io.containerd.cgroups.v1.MemoryOomControl",
        "HugetlbStat": _run(1, "uint64", "usage max failcnt") + ", 4 pagesize string",
        "PidsStat": _run(1, "uint64", "current limit"),
        "CPUStat": "1 usage io.containerd.cgroups.v1.CPUUsage, "
        "2 throttling io.containerd.cgroups.v1.Throttle",
        "CPUUsage": _run(1, "uint64", "total kernel user")
        + ", 4 per_cpu repeated uint64",
        "Throttle": _run(1, "uint64", "periods throttled_periods throttled_time"),
        "MemoryStat": _run(
            1,
            "uint64",
            "cache rss rss_huge mapped_file dirty writeback pg_pg_in pg_pg_out "
            "pg_fault pg_maj_fault inactive_anon active_anon inactive_file "
            "active_file unevictable hierarchical_memory_limit "
            "hierarchical_swap_limit total_cache total_rss total_rss_huge "
            "total_mapped_file total_dirty total_writeback total_pg_pg_in "
            "total_pg_pg_out total_pg_fault total_pg_maj_fault "
            "total_inactive_anon total_active_anon total_inactive_file "
            "total_active_file total_unevictable",
        )
        + ", "
        + _run(
            33, "io.containerd.cgroups.v1.MemoryEntry", "usage swap kernel kernel_tcp"
        ),
        "MemoryEntry": _run(1, "uint64", "limit usage max failcnt"),
        "MemoryOomControl": _run(1, "uint64", "oom_kill_disable under_oom oom_kill"),
        "BlkIOStat": _run(
            1,
            "repeated io.containerd.cgroups.v1.BlkIOEntry",
            "io_service_bytes_recursive io_serviced_recursive io_queued_recursive "
            "io_service_time_recursive io_wait_time_recursive io_merged_recursive "
            "io_time_recursive sectors_recursive",
        ),
        "BlkIOEntry": "1 op string, 2 device string, "
        + _run(3, "uint64", "major minor value"),
        "RdmaStat": _run(
            1, "repeated io.containerd.cgroups.v1.RdmaEntry", "current limit"
        ),
        "RdmaEntry": "1 device string, " + _run(2, "uint32", "hca_handles hca_objects"),
        "NetworkStat": "1 name string, "
        + _run(
            2,
            "uint64",
            "rx_bytes rx_packets rx_errors rx_dropped "
            "tx_bytes tx_packets tx_errors tx_dropped",
        ),
        "CgroupStats": _run(
            1,
            "uint64",
            "nr_sleeping nr_running nr_stopped nr_uninterruptible nr_io_wait",
        ),
    },
    cgroups_v2_pb2: {
        "Metrics": "1 pids io.containerd.cgroups.v2.PidsStat, "
        "2 cpu io.containerd.cgroups.v2.CPUStat, "
        "4 memory io.containerd.cgroups.v2.MemoryStat, "
        "5 rdma io.containerd.cgroups.v2.RdmaStat, "
        "6 io io.containerd.cgroups.v2.IOStat, "
        "7 hugetlb repeated io.containerd.cgroups.v2.HugeTlbStat, "
        "8 memory_events io.containerd.cgroups.v2.MemoryEvents",
        "PidsStat": _run(1, "uint64", "current limit"),
        "CPUStat": _run(
            1,
            "uint64",
            "usage_usec user_usec system_usec nr_periods nr_throttled throttled_usec",
        ),
        "MemoryStat": _run(
            1,
            "uint64",
            "anon file kernel_stack slab sock shmem file_mapped file_dirty "
            "file_writeback anon_thp inactive_anon active_anon inactive_file "
            "active_file unevictable slab_reclaimable slab_unreclaimable pgfault "
            "pgmajfault workingset_refault workingset_activate "
            "workingset_nodereclaim pgrefill pgscan pgsteal pgactivate "
            "pgdeactivate pglazyfree pglazyfreed thp_fault_alloc "
            "thp_collapse_alloc usage usage_limit swap_usage swap_limit",
        ),
        "MemoryEvents": _run(1, "uint64", "low high max oom oom_kill"),
        "RdmaStat": _run(
            1, "repeated io.containerd.cgroups.v2.RdmaEntry", "current limit"
        ),
        "RdmaEntry": "1 device string, " + _run(2, "uint32", "hca_handles hca_objects"),
        "IOStat": "1 usage repeated io.containerd.cgroups.v2.IOEntry",
        "IOEntry": _run(1, "uint64", "major minor rbytes wbytes rios wios"),
        "HugeTlbStat": _run(1, "uint64", "current max") + ", 3 pagesize string",
    },
    bootstrap_pb2: {
        "BootstrapParams": "1 instance_id string, 2 namespace string, "
        "3 log_level containerd.runtime.bootstrap.v1.LogLevel, "
        "4 containerd_version string, 5 containerd_ttrpc_address string, "
        "6 containerd_grpc_address string, 7 containerd_binary string, "
        "8 extensions repeated containerd.runtime.bootstrap.v1.Extension, "
        "9 socket_dir optional string",
        "Extension": f"1 value {ANY}",
        "BootstrapResult": "1 version int32, 2 address string, 3 protocol string, "
        "4 capabilities repeated containerd.runtime.bootstrap.v1.Capability, "
        "5 metadata map<string,string>",
    },
    introspection_pb2: {
        "RuntimeInfo": "1 name string, 2 version containerd.types.RuntimeVersion, "
        f"3 options {ANY}, 4 features {ANY}, 5 annotations map<string,string>",
        "RuntimeVersion": "1 version string, 2 revision string",
    },
}

PACKAGES = {
    status_pb2: "google.rpc",
    ttrpc_pb2: "ttrpc",
    mount_pb2: "containerd.types",
    task_types_pb2: "containerd.v1.types",
    task_pb2: "containerd.task.v2",
    events_pb2: "containerd.events",
    events_service_pb2: "containerd.services.events.ttrpc.v1",
    runc_options_pb2: "containerd.runc.v1",
    cgroups_v1_pb2: "io.containerd.cgroups.v1",
    cgroups_v2_pb2: "io.containerd.cgroups.v2",
    bootstrap_pb2: "containerd.runtime.bootstrap.v1",
    introspection_pb2: "containerd.types",
}


class SchemaTests(SynchronousTestCase):
    """
    Packages, message sets, field numbers and types match containerd.
    """

    def test_packages(self) -> None:
        """
        Each file declares containerd's proto package.
        """
        for module, package in PACKAGES.items():
            self.assertEqual(module.DESCRIPTOR.package, package, module.__name__)

    def test_messageSets(self) -> None:
        """
        Each file defines exactly the messages in its table.
        """
        for module, schema in SCHEMAS.items():
            self.assertEqual(
                sorted(module.DESCRIPTOR.message_types_by_name),
                sorted(schema),
                module.__name__,
            )

    def test_fields(self) -> None:
        """
        Every field of every message has containerd's number, name and type.
        """
        for module, schema in SCHEMAS.items():
            for name, expected in schema.items():
                descriptor = module.DESCRIPTOR.message_types_by_name[name]
                self.assertEqual(_signature(descriptor), expected, descriptor.full_name)

    def test_typeURLNames(self) -> None:
        """
        Messages that travel inside C{Any} have the full names used as their
        type URLs.
        """
        expected = [
            (events_pb2.TaskCreate, "containerd.events.TaskCreate"),
            (events_pb2.TaskStart, "containerd.events.TaskStart"),
            (events_pb2.TaskDelete, "containerd.events.TaskDelete"),
            (events_pb2.TaskExit, "containerd.events.TaskExit"),
            (events_pb2.TaskOOM, "containerd.events.TaskOOM"),
            (events_pb2.TaskExecAdded, "containerd.events.TaskExecAdded"),
            (events_pb2.TaskExecStarted, "containerd.events.TaskExecStarted"),
            (events_pb2.TaskPaused, "containerd.events.TaskPaused"),
            (events_pb2.TaskResumed, "containerd.events.TaskResumed"),
            (events_pb2.TaskCheckpointed, "containerd.events.TaskCheckpointed"),
            (runc_options_pb2.Options, "containerd.runc.v1.Options"),
            (
                runc_options_pb2.CheckpointOptions,
                "containerd.runc.v1.CheckpointOptions",
            ),
            (runc_options_pb2.ProcessDetails, "containerd.runc.v1.ProcessDetails"),
            (cgroups_v1_pb2.Metrics, "io.containerd.cgroups.v1.Metrics"),
            (cgroups_v2_pb2.Metrics, "io.containerd.cgroups.v2.Metrics"),
            (introspection_pb2.RuntimeInfo, "containerd.types.RuntimeInfo"),
            (
                bootstrap_pb2.BootstrapParams,
                "containerd.runtime.bootstrap.v1.BootstrapParams",
            ),
            (
                bootstrap_pb2.BootstrapResult,
                "containerd.runtime.bootstrap.v1.BootstrapResult",
            ),
        ]
        for message, name in expected:
            self.assertEqual(message.DESCRIPTOR.full_name, name)

    def test_taskService(self) -> None:
        """
        C{containerd.task.v2.Task} has containerd's 17 methods, in shim.proto's
        order, with the right request and response types.
        """
        service = task_pb2.DESCRIPTOR.services_by_name["Task"]
        self.assertEqual(service.full_name, "containerd.task.v2.Task")
        empty = "google.protobuf.Empty"
        expected = [
            ("State", "StateRequest", "StateResponse"),
            ("Create", "CreateTaskRequest", "CreateTaskResponse"),
            ("Start", "StartRequest", "StartResponse"),
            ("Delete", "DeleteRequest", "DeleteResponse"),
            ("Pids", "PidsRequest", "PidsResponse"),
            ("Pause", "PauseRequest", empty),
            ("Resume", "ResumeRequest", empty),
            ("Checkpoint", "CheckpointTaskRequest", empty),
            ("Kill", "KillRequest", empty),
            ("Exec", "ExecProcessRequest", empty),
            ("ResizePty", "ResizePtyRequest", empty),
            ("CloseIO", "CloseIORequest", empty),
            ("Update", "UpdateTaskRequest", empty),
            ("Wait", "WaitRequest", "WaitResponse"),
            ("Stats", "StatsRequest", "StatsResponse"),
            ("Connect", "ConnectRequest", "ConnectResponse"),
            ("Shutdown", "ShutdownRequest", empty),
        ]

        def qualify(name: str) -> str:
            return name if "." in name else "containerd.task.v2." + name

        self.assertEqual(
            [
                (m.name, m.input_type.full_name, m.output_type.full_name)
                for m in service.methods
            ],
            [(m, qualify(i), qualify(o)) for m, i, o in expected],
        )

    def test_eventsService(self) -> None:
        """
        containerd's events service has the single method C{Forward}.
        """
        service = events_service_pb2.DESCRIPTOR.services_by_name["Events"]
        self.assertEqual(
            service.full_name, "containerd.services.events.ttrpc.v1.Events"
        )
        self.assertEqual(
            [
                (m.name, m.input_type.full_name, m.output_type.full_name)
                for m in service.methods
            ],
            [
                (
                    "Forward",
                    "containerd.services.events.ttrpc.v1.ForwardRequest",
                    "google.protobuf.Empty",
                )
            ],
        )

    def test_taskStatusEnum(self) -> None:
        """
        C{containerd.v1.types.Status} keeps containerd's value names and numbers.
        """
        enum = task_types_pb2.Status.DESCRIPTOR
        self.assertEqual(enum.full_name, "containerd.v1.types.Status")
        self.assertEqual(
            [(v.name, v.number) for v in enum.values],
            [
                ("UNKNOWN", 0),
                ("CREATED", 1),
                ("RUNNING", 2),
                ("STOPPED", 3),
                ("PAUSED", 4),
                ("PAUSING", 5),
            ],
        )

    def test_bootstrapEnums(self) -> None:
        """
        C{LogLevel} and C{Capability} have containerd 2.3's numbers.
        """
        self.assertEqual(
            {v.name: v.number for v in bootstrap_pb2.LogLevel.DESCRIPTOR.values},
            {
                "LOG_LEVEL_INFO": 0,
                "LOG_LEVEL_TRACE": -8,
                "LOG_LEVEL_DEBUG": -4,
                "LOG_LEVEL_WARN": 4,
                "LOG_LEVEL_ERROR": 8,
                "LOG_LEVEL_FATAL": 10,
                "LOG_LEVEL_PANIC": 12,
            },
        )
        self.assertEqual(
            [(v.name, v.number) for v in bootstrap_pb2.Capability.DESCRIPTOR.values],
            [("CAPABILITY_UNSPECIFIED", 0)],
        )


class TTRPCEnvelopeTests(SynchronousTestCase):
    """
    The ttrpc Request/Response envelopes against observed bytes.
    """

    CONNECT_REQUEST = (
        b"\x0a\x17containerd.task.v2.Task\x12\x07Connect\x1a\x05\x0a\x03sx1"
    )

    def test_connectRequest(self) -> None:
        """
        containerd's observed C{Connect} request decodes, and re-encodes to the
        same bytes.
        """
        request = ttrpc_pb2.Request.FromString(self.CONNECT_REQUEST)
        self.assertEqual(request.service, "containerd.task.v2.Task")
        self.assertEqual(request.method, "Connect")
        self.assertEqual(request.timeout_nano, 0)
        self.assertEqual(list(request.metadata), [])
        self.assertEqual(task_pb2.ConnectRequest.FromString(request.payload).id, "sx1")
        self.assertEqual(request.SerializeToString(), self.CONNECT_REQUEST)

    def test_connectResponse(self) -> None:
        """
        The Go shim's observed C{Connect} reply decodes to its pids.
        """
        response = ttrpc_pb2.Response.FromString(
            bytes.fromhex("12 06 08 86 71 10 9c 71")
        )
        self.assertFalse(response.HasField("status"))
        connect = task_pb2.ConnectResponse.FromString(response.payload)
        self.assertEqual((connect.shim_pid, connect.task_pid), (14470, 14492))
        self.assertEqual(connect.version, "")
        self.assertEqual(
            task_pb2.ConnectResponse(
                shim_pid=14470, task_pid=14492
            ).SerializeToString(),
            bytes.fromhex("08 86 71 10 9c 71"),
        )

    def test_errorResponse(self) -> None:
        """
        An error response carries only C{status} (field 1).
        """
        response = ttrpc_pb2.Response(
            status=status_pb2.Status(code=5, message="nf"),
        )
        self.assertEqual(
            response.SerializeToString(),
            bytes.fromhex("0a 06 08 05 12 02") + b"nf",
        )

    def test_emptySuccess(self) -> None:
        """
        A successful call returning C{Empty} gives a zero-length frame payload.
        """
        payload = empty_pb2.Empty().SerializeToString()
        self.assertEqual(payload, b"")
        self.assertEqual(ttrpc_pb2.Response(payload=payload).SerializeToString(), b"")

    def test_statusDetails(self) -> None:
        """
        C{google.rpc.Status.details} is field 3, a repeated C{Any}.
        """
        status = status_pb2.Status(
            code=8, message="x", details=[any_pb2.Any(type_url="a")]
        )
        self.assertEqual(
            status.SerializeToString(),
            bytes.fromhex("08 08 12 01 78 1a 03 0a 01 61"),
        )

    def test_observedForward(self) -> None:
        """
        The Go shim's observed C{Forward} of C{/tasks/exit} encodes to 195
        bytes (the observed frame length, 0xc3), field for field.
        """
        task_exit = (
            _ld(1, b"sx1")
            + _ld(2, b"sx1")
            + bytes.fromhex("18 9c 71")  # pid 14492
            + bytes.fromhex("20 03")  # exit_status 3
            # exited_at {seconds: 1795906536, nanos: 296375959}
            + _ld(5, bytes.fromhex("08 e8 b7 ad d8 06 10 97 ad a9 8d 01"))
        )
        envelope = (
            # timestamp {seconds: 1795906536, nanos: 296453174}
            _ld(1, bytes.fromhex("08 e8 b7 ad d8 06 10 b6 88 ae 8d 01"))
            + _ld(2, b"sxref")
            + _ld(3, b"/tasks/exit")
            + _ld(4, _ld(1, b"containerd.events.TaskExit") + _ld(2, task_exit))
        )
        wire = (
            _ld(1, b"containerd.services.events.ttrpc.v1.Events")
            + _ld(2, b"Forward")
            + _ld(3, _ld(1, envelope))
            + bytes.fromhex("20 cd be 97 d0 12")  # timeout_nano 4999995213
            + _ld(5, _ld(1, b"containerd-namespace-ttrpc") + _ld(2, b"sxref"))
        )
        self.assertEqual(len(wire), 0xC3)

        event = events_pb2.TaskExit(
            container_id="sx1",
            id="sx1",
            pid=14492,
            exit_status=3,
            exited_at=timestamp_pb2.Timestamp(seconds=1795906536, nanos=296375959),
        )
        forward = events_service_pb2.ForwardRequest(
            envelope=events_service_pb2.Envelope(
                timestamp=timestamp_pb2.Timestamp(seconds=1795906536, nanos=296453174),
                namespace="sxref",
                topic="/tasks/exit",
                event=any_pb2.Any(
                    type_url="containerd.events.TaskExit",
                    value=event.SerializeToString(),
                ),
            )
        )
        request = ttrpc_pb2.Request(
            service="containerd.services.events.ttrpc.v1.Events",
            method="Forward",
            payload=forward.SerializeToString(),
            timeout_nano=4999995213,
            metadata=[
                ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="sxref")
            ],
        )
        self.assertEqual(request.SerializeToString(), wire)

        decoded = events_service_pb2.ForwardRequest.FromString(
            ttrpc_pb2.Request.FromString(wire).payload
        )
        self.assertEqual(decoded, forward)
        self.assertEqual(
            events_pb2.TaskExit.FromString(decoded.envelope.event.value), event
        )


class TaskMessageTests(SynchronousTestCase):
    """
    Spot checks of task API encodings.
    """

    def test_stateZeroTime(self) -> None:
        """
        Go's zero time in C{StateResponse.exited_at} (field 10) encodes as the
        bytes observed from the Go shim.
        """
        state = task_pb2.StateResponse(
            exited_at=timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME)
        )
        self.assertEqual(
            state.SerializeToString(),
            bytes.fromhex("52 0b 08 80 92 b8 c3 98 fe ff ff ff 01"),
        )

    def test_emptyTimestampStillWritten(self) -> None:
        """
        A Timestamp that is set but all zero is still written (as an empty
        message, which Go reads as 1970); only an unset one is left out.
        """
        state = task_pb2.StateResponse(exited_at=timestamp_pb2.Timestamp())
        self.assertEqual(state.SerializeToString(), bytes.fromhex("52 00"))
        self.assertEqual(task_pb2.StateResponse().SerializeToString(), b"")

    def test_stateStatus(self) -> None:
        """
        C{StateResponse.status} is field 4, a varint enum; C{exec_id} is 11.
        """
        state = task_pb2.StateResponse(status=task_types_pb2.RUNNING, exec_id="e")
        self.assertEqual(state.SerializeToString(), bytes.fromhex("20 02 5a 01 65"))

    def test_deleteMinusOne(self) -> None:
        """
        Go's pid -1, as uint32 4294967295, is a 5-byte varint in field 1.
        """
        response = task_pb2.DeleteResponse(
            pid=4294967295,
            exited_at=timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME),
        )
        wire = response.SerializeToString()
        self.assertTrue(wire.startswith(bytes.fromhex("08 ff ff ff ff 0f")))
        self.assertEqual(
            wire[6:], bytes.fromhex("1a 0b 08 80 92 b8 c3 98 fe ff ff ff 01")
        )

    def test_createOptions(self) -> None:
        """
        C{CreateTaskRequest}: rootfs is field 3 and options field 10.
        """
        request = task_pb2.CreateTaskRequest(
            rootfs=[mount_pb2.Mount(type="bind")],
            options=any_pb2.Any(type_url="o"),
        )
        self.assertEqual(
            request.SerializeToString(),
            bytes.fromhex("1a 06 0a 04") + b"bind" + bytes.fromhex("52 03 0a 01 6f"),
        )

    def test_updateAnnotations(self) -> None:
        """
        C{UpdateTaskRequest.annotations} is a map in field 3: one entry
        message per pair.
        """
        request = task_pb2.UpdateTaskRequest(annotations={"a": "b"})
        self.assertEqual(
            request.SerializeToString(),
            bytes.fromhex("1a 06 0a 01 61 12 01 62"),
        )

    def test_kill(self) -> None:
        """
        C{KillRequest}: signal is field 3, all is field 4.
        """
        request = task_pb2.KillRequest(id="c", signal=9, all=True)
        self.assertEqual(
            request.SerializeToString(), bytes.fromhex("0a 01 63 18 09 20 01")
        )

    def test_pidsWithDetails(self) -> None:
        """
        The observed Pids entry for an exec: pid plus C{ProcessDetails} in an
        C{Any}.
        """
        details = runc_options_pb2.ProcessDetails(exec_id="e1")
        self.assertEqual(details.SerializeToString(), b"\x0a\x02e1")
        response = task_pb2.PidsResponse(
            processes=[
                task_types_pb2.ProcessInfo(
                    pid=15755,
                    info=any_pb2.Any(
                        type_url="containerd.runc.v1.ProcessDetails",
                        value=details.SerializeToString(),
                    ),
                )
            ]
        )
        info = _ld(1, b"containerd.runc.v1.ProcessDetails") + _ld(2, b"\x0a\x02e1")
        entry = bytes.fromhex("08 8b 7b") + _ld(2, info)
        self.assertEqual(response.SerializeToString(), _ld(1, entry))

    def test_waitAndStart(self) -> None:
        """
        C{WaitResponse.exited_at} is field 2; C{StartResponse.pid} is field 1.
        """
        wait = task_pb2.WaitResponse(
            exit_status=137, exited_at=timestamp_pb2.Timestamp(seconds=1)
        )
        self.assertEqual(
            wait.SerializeToString(), bytes.fromhex("08 89 01 12 02 08 01")
        )
        self.assertEqual(
            task_pb2.StartResponse(pid=300).SerializeToString(),
            bytes.fromhex("08 ac 02"),
        )

    def test_mount(self) -> None:
        """
        C{containerd.types.Mount}: type 1, source 2, target 3, options 4.
        """
        mount = mount_pb2.Mount(
            type="bind", source="/s", target="/t", options=["rbind", "rw"]
        )
        self.assertEqual(
            mount.SerializeToString(),
            b"\x0a\x04bind\x12\x02/s\x1a\x02/t\x22\x05rbind\x22\x02rw",
        )


class EventTests(SynchronousTestCase):
    """
    Spot checks of event payload encodings.
    """

    def test_taskCreate(self) -> None:
        """
        C{TaskCreate}: io is field 4 (a C{TaskIO}), pid field 6.
        """
        event = events_pb2.TaskCreate(
            container_id="c",
            io=events_pb2.TaskIO(stdout="o", terminal=True),
            pid=2,
        )
        self.assertEqual(
            event.SerializeToString(),
            bytes.fromhex("0a 01 63 22 05 12 01 6f 20 01 30 02"),
        )

    def test_taskDelete(self) -> None:
        """
        C{TaskDelete}: exited_at is field 4 and id field 5.
        """
        event = events_pb2.TaskDelete(
            exit_status=1,
            exited_at=timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME),
            id="x",
        )
        self.assertEqual(
            event.SerializeToString(),
            bytes.fromhex("18 01 22 0b 08 80 92 b8 c3 98 fe ff ff ff 01 2a 01 78"),
        )

    def test_taskExecStarted(self) -> None:
        """
        C{TaskExecStarted}: exec_id is field 2, pid field 3.
        """
        event = events_pb2.TaskExecStarted(container_id="c", exec_id="e", pid=7)
        self.assertEqual(
            event.SerializeToString(), bytes.fromhex("0a 01 63 12 01 65 18 07")
        )

    def test_taskCheckpointed(self) -> None:
        """
        C{TaskCheckpointed.checkpoint} is field 2.
        """
        event = events_pb2.TaskCheckpointed(checkpoint="k")
        self.assertEqual(event.SerializeToString(), bytes.fromhex("12 01 6b"))


class RuncOptionsTests(SynchronousTestCase):
    """
    Spot checks of the runc shim's option messages.
    """

    def test_options(self) -> None:
        """
        The observed options (no_new_keyring, root) plus the highest field.
        """
        options = runc_options_pb2.Options(
            no_new_keyring=True, root="/r", criu_work_path="/w"
        )
        self.assertEqual(
            options.SerializeToString(),
            bytes.fromhex("10 01 3a 02 2f 72 5a 02 2f 77"),
        )

    def test_checkpointOptions(self) -> None:
        """
        C{CheckpointOptions}: exit 1, empty_namespaces 6, work_path 9.
        """
        options = runc_options_pb2.CheckpointOptions(
            exit=True, empty_namespaces=["network"], work_path="/w"
        )
        self.assertEqual(
            options.SerializeToString(),
            b"\x08\x01\x32\x07network\x4a\x02/w",
        )


class CgroupMetricsTests(SynchronousTestCase):
    """
    Spot checks of the cgroup v1 and v2 Metrics encodings.
    """

    def test_v1TotalUnevictable(self) -> None:
        """
        v1 C{MemoryStat.total_unevictable} is field 32 (a two-byte tag), inside
        C{Metrics.memory} (field 4).
        """
        metrics = cgroups_v1_pb2.Metrics(
            memory=cgroups_v1_pb2.MemoryStat(total_unevictable=5)
        )
        self.assertEqual(metrics.SerializeToString(), bytes.fromhex("22 03 80 02 05"))

    def test_v1KernelTCP(self) -> None:
        """
        v1 C{MemoryStat.kernel_tcp} is field 36, a C{MemoryEntry}.
        """
        stat = cgroups_v1_pb2.MemoryStat(
            kernel_tcp=cgroups_v1_pb2.MemoryEntry(failcnt=1)
        )
        self.assertEqual(stat.SerializeToString(), bytes.fromhex("a2 02 02 20 01"))

    def test_v1OomControlAndPerCPU(self) -> None:
        """
        v1 C{memory_oom_control} is field 9; C{per_cpu} is packed, as in Go.
        """
        metrics = cgroups_v1_pb2.Metrics(
            cpu=cgroups_v1_pb2.CPUStat(usage=cgroups_v1_pb2.CPUUsage(per_cpu=[1, 2])),
            memory_oom_control=cgroups_v1_pb2.MemoryOomControl(oom_kill=3),
        )
        self.assertEqual(
            metrics.SerializeToString(),
            bytes.fromhex("1a 06 0a 04 22 02 01 02 4a 02 18 03"),
        )

    def test_v2MemoryEvents(self) -> None:
        """
        v2 C{MemoryEvents.oom_kill} is field 5, inside C{Metrics.memory_events}
        (field 8).
        """
        metrics = cgroups_v2_pb2.Metrics(
            memory_events=cgroups_v2_pb2.MemoryEvents(oom_kill=5)
        )
        self.assertEqual(metrics.SerializeToString(), bytes.fromhex("42 02 28 05"))

    def test_v2MemoryLimits(self) -> None:
        """
        v2 C{MemoryStat.swap_limit} is field 35; "max" is 2**64-1.
        """
        stat = cgroups_v2_pb2.MemoryStat(swap_limit=2**64 - 1)
        self.assertEqual(
            stat.SerializeToString(),
            bytes.fromhex("98 02 ff ff ff ff ff ff ff ff ff 01"),
        )

    def test_v2PidsAndIO(self) -> None:
        """
        v2 C{Metrics}: pids is field 1, io field 6 (field 3 is unused).
        """
        metrics = cgroups_v2_pb2.Metrics(
            pids=cgroups_v2_pb2.PidsStat(current=4),
            io=cgroups_v2_pb2.IOStat(usage=[cgroups_v2_pb2.IOEntry(major=8, wios=1)]),
        )
        self.assertEqual(
            metrics.SerializeToString(),
            bytes.fromhex("0a 02 08 04 32 06 0a 04 08 08 30 01"),
        )


class BootstrapTests(SynchronousTestCase):
    """
    containerd 2.3's bootstrap messages.
    """

    def test_debugAndSocketDir(self) -> None:
        """
        LOG_LEVEL_DEBUG (-4) is a 10-byte varint in field 3; socket_dir is
        field 9.
        """
        params = bootstrap_pb2.BootstrapParams(
            namespace="k8s.io",
            log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
            socket_dir="/s",
        )
        wire = (
            b"\x12\x06k8s.io"
            + bytes.fromhex("18 fc ff ff ff ff ff ff ff ff 01")
            + b"\x4a\x02/s"
        )
        self.assertEqual(params.SerializeToString(), wire)
        self.assertEqual(bootstrap_pb2.BootstrapParams.FromString(wire), params)

    def test_socketDirPresence(self) -> None:
        """
        socket_dir has presence: unset and set-to-empty differ on the wire.
        """
        unset = bootstrap_pb2.BootstrapParams()
        self.assertFalse(unset.HasField("socket_dir"))
        self.assertEqual(unset.SerializeToString(), b"")
        empty = bootstrap_pb2.BootstrapParams(socket_dir="")
        self.assertTrue(empty.HasField("socket_dir"))
        self.assertEqual(empty.SerializeToString(), bytes.fromhex("4a 00"))

    def test_openLogLevel(self) -> None:
        """
        An unknown log level survives decoding (proto3 enums are open).
        """
        params = bootstrap_pb2.BootstrapParams.FromString(bytes.fromhex("18 03"))
        self.assertEqual(params.log_level, 3)
        self.assertEqual(params.SerializeToString(), bytes.fromhex("18 03"))

    def test_extensionsAndAddresses(self) -> None:
        """
        Fields 1 and 4 to 8 of C{BootstrapParams}.
        """
        params = bootstrap_pb2.BootstrapParams(
            instance_id="i",
            containerd_version="v",
            containerd_ttrpc_address="t",
            containerd_grpc_address="g",
            containerd_binary="b",
            extensions=[
                bootstrap_pb2.Extension(
                    value=any_pb2.Any(type_url="containerd.runc.v1.Options")
                )
            ],
        )
        options = _ld(1, _ld(1, b"containerd.runc.v1.Options"))
        self.assertEqual(
            params.SerializeToString(),
            b"\x0a\x01i\x22\x01v\x2a\x01t\x32\x01g\x3a\x01b" + _ld(8, options),
        )

    def test_result(self) -> None:
        """
        C{BootstrapResult}: version 1, address 2, protocol 3, capabilities 4
        (packed enum), metadata 5 (map).
        """
        result = bootstrap_pb2.BootstrapResult(
            version=2,
            address="unix:///s",
            protocol="ttrpc",
            capabilities=[bootstrap_pb2.CAPABILITY_UNSPECIFIED],
            metadata={"k": "v"},
        )
        self.assertEqual(
            result.SerializeToString(),
            b"\x08\x02\x12\x09unix:///s\x1a\x05ttrpc"
            + bytes.fromhex("22 01 00 2a 06 0a 01 6b 12 01 76"),
        )


class IntrospectionTests(SynchronousTestCase):
    """
    The C{-info} reply.
    """

    def test_runtimeInfo(self) -> None:
        """
        C{RuntimeInfo}: name 1, version 2, options 3, features 4,
        annotations 5.
        """
        info = introspection_pb2.RuntimeInfo(
            name="io.containerd.runc.v2",
            version=introspection_pb2.RuntimeVersion(version="1", revision="r"),
            options=any_pb2.Any(type_url="o"),
            features=any_pb2.Any(value=b"{}"),
            annotations={"a": "b"},
        )
        self.assertEqual(
            info.SerializeToString(),
            _ld(1, b"io.containerd.runc.v2")
            + bytes.fromhex("12 06 0a 01 31 12 01 72")
            + bytes.fromhex("1a 03 0a 01 6f")
            + b"\x22\x04\x12\x02{}"
            + bytes.fromhex("2a 06 0a 01 61 12 01 62"),
        )
