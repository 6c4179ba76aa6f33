"""
Root file systems for the test containers, from the host's static busybox:
a plain directory for C{ctr run --rootfs}, and an OCI image archive for
C{ctr images import}, so that C{ctr run IMAGE} goes through the overlayfs
snapshotter and containerd sends real mounts in C{CreateTaskRequest.rootfs}.

Both are built once per process under C{/tmp} and removed at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping

from tests.e2e.runtimes import BUSYBOX

APPLETS = (
    "cat",
    "echo",
    "env",
    "false",
    "head",
    "id",
    "kill",
    "ls",
    "ps",
    "sh",
    "sleep",
    "stty",
    "tail",
    "true",
    "tty",
    "wc",
    "yes",
)

IMAGE_NAME = "docker.io/library/shimd-e2e:latest"

PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"

_built: dict[str, str] = {}


def _scratchDirectory() -> str:
    if "scratch" not in _built:
        directory = tempfile.mkdtemp(prefix="shimd-e2e-fs-", dir="/tmp")
        atexit.register(shutil.rmtree, directory, True)
        _built["scratch"] = directory
    return _built["scratch"]


def busyboxRootfs() -> str:
    """
    A directory usable as C{ctr run --rootfs}: C{bin/busybox} with a symlink
    per applet in L{APPLETS}, C{etc/passwd}, C{etc/group}, C{tmp} and the
    mount points runc needs.
    """
    if "rootfs" not in _built:
        rootfs = os.path.join(_scratchDirectory(), "rootfs")
        for directory in ("bin", "etc", "tmp", "proc", "dev", "sys", "root"):
            os.makedirs(os.path.join(rootfs, directory))
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write(PASSWD)
        with open(os.path.join(rootfs, "etc", "group"), "w") as f:
            f.write(GROUP)
        _built["rootfs"] = rootfs
    return _built["rootfs"]


def _addDirectory(archive: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    archive.addfile(info)


def _addFile(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def busyboxLayer() -> bytes:
    """
    An uncompressed layer tar with the same content as L{busyboxRootfs}.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("bin", "etc", "proc", "dev", "sys", "root"):
            _addDirectory(archive, directory)
        _addDirectory(archive, "tmp", 0o1777)
        with open(BUSYBOX, "rb") as f:
            _addFile(archive, "bin/busybox", f.read(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            archive.addfile(info)
        _addFile(archive, "etc/passwd", PASSWD.encode(), 0o644)
        _addFile(archive, "etc/group", GROUP.encode(), 0o644)
    return buffer.getvalue()


def _descriptor(mediaType: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": mediaType,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def ociArchive(
    name: str = IMAGE_NAME, imageConfig: Mapping[str, object] | None = None
) -> bytes:
    """
    An OCI image layout as a tar stream: C{oci-layout}, C{index.json} and
    the blobs of one linux/amd64 image (one busybox layer), named C{name}
    through the C{io.containerd.image.name} and
    C{org.opencontainers.image.ref.name} annotations.

    @param imageConfig: the image configuration's C{config} object
        (C{Env}, C{Entrypoint}, C{Cmd}, ...); by default C{PATH=/bin} and
        the command C{/bin/sh}.
    """
    if imageConfig is None:
        imageConfig = {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}
    layer = busyboxLayer()
    layerDigest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": dict(imageConfig),
            "rootfs": {"type": "layers", "diff_ids": [layerDigest]},
            "history": [{"created_by": "shimd e2e tests"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config),
            "layers": [_descriptor(MEDIA_LAYER, layer)],
        }
    )
    manifestDescriptor = _descriptor(MEDIA_MANIFEST, manifest)
    manifestDescriptor["platform"] = {"architecture": "amd64", "os": "linux"}
    manifestDescriptor["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
    }
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [manifestDescriptor],
        }
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _addFile(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644)
        _addFile(archive, "index.json", index, 0o644)
        _addDirectory(archive, "blobs")
        _addDirectory(archive, "blobs/sha256")
        for blob in (layer, config, manifest):
            digest = hashlib.sha256(blob).hexdigest()
            _addFile(archive, f"blobs/sha256/{digest}", blob, 0o644)
    return buffer.getvalue()


def ociArchivePath() -> str:
    """
    L{ociArchive} written to a file, once per process.
    """
    if "archive" not in _built:
        path = os.path.join(_scratchDirectory(), "busybox-oci.tar")
        with open(path, "wb") as f:
            f.write(ociArchive())
        _built["archive"] = path
    return _built["archive"]
