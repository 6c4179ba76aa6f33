"""
Pods the way Kubernetes runs them: containerd's CRI plugin with shimd as a
runtime handler.

L{tests.cri.test_pod} runs pods through a private containerd with its CRI
plugin enabled (L{tests.cri.containerd}), talking CRI over gRPC with a small
client (L{tests.cri.client}) and our own schema of the CRI messages it uses
(C{cri_api.proto}, generated into L{tests.cri.cri_api_pb2} and
C{cri_api_pb2_grpc} by C{tests/cri/genprotos.sh}). Each test runs twice: with
the handler C{pyrunc} (shimd, configured exactly as
C{deploy/containerd-config.toml} says) and with C{runc} (containerd's Go
shim, the reference). L{tests.cri.test_deploy} checks the deployment files
and the generated modules without root. L{tests.cri.trypod} runs one pod
through any containerd by hand, for users without C{crictl} (see the
README's Kubernetes section).

They need root, containerd (1.6 or later, whose CRI plugin is built in),
runc, busybox-static and grpcio (C{pip install grpcio}, or the C{test}
extra); without them they skip and say why. Run them with
C{python -m twisted.trial tests.cri}.
"""
