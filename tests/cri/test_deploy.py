"""
Tests of what a user deploys to run pods under shimd, and of the CRI schema
the CRI tests use; none of them needs root or containerd.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import subprocess
import sys
import tomllib

from twisted.trial.unittest import SkipTest, TestCase

import shimd
from tests.cri import cri_api_pb2
from tests.cri.containerd import DEPLOY_CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
CRI_RUNTIMES = ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes")


def _read(*path: str) -> str:
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def _yamlScalars(text: str) -> dict[str, str]:
    """
    The C{key: value} lines of a flat YAML document (comments and nested
    keys left out), enough for a RuntimeClass.
    """
    scalars = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z]+):\s*(\S.*)$", line)
        if match:
            scalars[match.group(1)] = match.group(2)
    return scalars


def _runtimes(config: dict[str, object]) -> dict[str, dict[str, object]]:
    table: object = config
    for key in CRI_RUNTIMES:
        assert isinstance(table, dict), table
        table = table[key]
    assert isinstance(table, dict), table
    return table


class DeployTests(TestCase):
    """
    C{deploy/}: the containerd configuration snippet and the RuntimeClass,
    and the README's Kubernetes section showing the same.
    """

    def test_containerdRuntimeEntry(self) -> None:
        """
        C{deploy/containerd-config.toml} is valid TOML defining two CRI
        runtime handlers: the default C{runc} (containerd drops its built-in
        one once a configuration names any runtime, and then disables the
        CRI plugin) and C{pyrunc}, of runtime type
        C{io.containerd.pyrunc.v2}, which containerd resolves to the binary
        C{containerd-shim-pyrunc-v2} (the last two dot-separated parts), the
        name of shimd's launcher script. Neither has an C{options} table
        (the one for shimd is shown commented out).
        """
        with open(DEPLOY_CONFIG, "rb") as f:
            config = tomllib.load(f)
        runtimes = _runtimes(config)
        self.assertEqual(
            runtimes,
            {
                "runc": {"runtime_type": "io.containerd.runc.v2"},
                "pyrunc": {"runtime_type": shimd.RUNTIME_NAME},
            },
        )
        self.assertEqual(shimd.RUNTIME_NAME, "io.containerd.pyrunc.v2")
        *_, name, version = shimd.RUNTIME_NAME.split(".")
        self.assertIn(f"bin/containerd-shim-{name}-{version}", _read("setup.cfg"))

    def test_runcOptionsFile(self) -> None:
        """
        C{deploy/runc-options.toml} is a file of runc options shimd reads
        through C{runtimeoptions.v1.Options}.
        """
        from shimd.protos import runc_options_pb2
        from shimd.shim.bootstrap import runcOptionsFromFile

        options = runc_options_pb2.Options.FromString(
            runcOptionsFromFile(os.path.join(DEPLOY, "runc-options.toml"))
        )
        self.assertEqual(options.binary_name, "runc")
        self.assertEqual(options.root, "/run/containerd/runc")
        self.assertFalse(options.systemd_cgroup)

    def test_runtimeClass(self) -> None:
        """
        C{deploy/runtimeclass.yaml} is a C{node.k8s.io/v1} RuntimeClass whose
        handler is the CRI runtime handler of the containerd snippet.
        """
        runtimeClass = _yamlScalars(_read("deploy", "runtimeclass.yaml"))
        self.assertEqual(
            runtimeClass,
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "handler": "pyrunc",
            },
        )
        with open(DEPLOY_CONFIG, "rb") as f:
            self.assertIn(runtimeClass["handler"], _runtimes(tomllib.load(f)))

    def test_examplePod(self) -> None:
        """
        C{deploy/example-pod.yaml} asks for the RuntimeClass by name.
        """
        self.assertIn(
            "  runtimeClassName: pyrunc\n", _read("deploy", "example-pod.yaml")
        )

    def test_readme(self) -> None:
        """
        The README's Kubernetes section shows the containerd runtime entry
        and the RuntimeClass as C{deploy/} has them.
        """
        readme = _read("README.rst")
        section = readme.partition("\nKubernetes\n----------\n")[2]
        self.assertTrue(section, "README.rst has no Kubernetes section")
        literal = "\n".join(line.removeprefix("    ") for line in section.splitlines())
        for path in ("containerd-config.toml", "runtimeclass.yaml"):
            for line in _read("deploy", path).splitlines():
                if line and not line.startswith("#"):
                    self.assertIn(line, literal, f"deploy/{path}")


class SchemaTests(TestCase):
    """
    C{tests/cri/cri_api.proto} and the modules generated from it.
    """

    def test_packageIsCRI(self) -> None:
        """
        The schema's package is the CRI's C{runtime.v1}, so the generated
        stubs call C{/runtime.v1.RuntimeService/...}.
        """
        self.assertEqual(cri_api_pb2.DESCRIPTOR.package, "runtime.v1")
        self.assertEqual(
            cri_api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].full_name,
            "runtime.v1.RuntimeService",
        )

    def test_noClashWithShimdProtos(self) -> None:
        """
        No schema of shimd's own (C{shimd/protos}) uses the package
        C{runtime.v1}, and all of them load into one descriptor pool with
        the CRI schema.
        """
        for path in glob.glob(os.path.join(ROOT, "shimd", "protos", "*.proto")):
            with open(path) as f:
                packages = re.findall(r"^package\s+([\w.]+)\s*;", f.read(), re.M)
            self.assertNotIn("runtime.v1", packages, path)
        modules = glob.glob(os.path.join(ROOT, "shimd", "protos", "*_pb2.py"))
        self.assertTrue(modules)
        for path in modules:
            module = importlib.import_module(
                "shimd.protos." + os.path.basename(path).removesuffix(".py")
            )
            self.assertNotEqual(module.DESCRIPTOR.package, "runtime.v1")

    def test_generatedModulesCurrent(self) -> None:
        """
        The committed C{cri_api_pb2*} modules are what C{genprotos.sh}
        generates from the schema now.
        """
        try:
            importlib.import_module("grpc_tools.protoc")
        except ImportError:
            raise SkipTest(
                "grpcio-tools is not installed (it is in the dev extra)"
            ) from None
        script = os.path.join(ROOT, "tests", "cri", "genprotos.sh")
        result = subprocess.run(
            ["bash", script, "--check"],
            capture_output=True,
            env={**os.environ, "PYTHON": sys.executable},
            check=False,
        )
        self.assertEqual(
            result.returncode, 0, result.stdout.decode() + result.stderr.decode()
        )
