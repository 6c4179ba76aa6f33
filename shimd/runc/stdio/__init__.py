"""
A container process's stdio: the pipes or pty runc gives the process, and
the copies between them and what containerd asked for (fifos, a file, a
logging binary).

Every descriptor is non-blocking and driven by the reactor. Copies are
producer/consumer pairs: a reader pauses while its writer's buffer is full,
so a slow client holds the container back instead of growing the shim's
memory, and never stalls another container.

The modes, chosen from the C{stdout} string as the Go shim does:
    - all of stdin, stdout and stderr empty: runc gets C{/dev/null};
    - a path (or C{fifo://}): pipes, copied to and from the fifos (or a
      regular file, appended to);
    - C{file:///path}: pipes, stdout and stderr both appended to the file;
    - C{binary:///path?k=v}: pipes whose read ends a logging binary reads;
    - with a terminal: runc sends the pty master over a console socket, and
      it is copied to stdout (stderr is unused).

A fifo the shim writes is opened for reading first, by the shim itself, so
that opening it for writing never waits for the client and writes never
fail while the client is away (containerd restarting): the bytes wait in the
fifo. Through that reader the shim also sees how much the client has yet to
read, and so knows when a process's output has reached the client
(L{processio.ProcessIO.waitDrained}). The stdin fifo gets a writer of the shim's own,
the keep-alive that C{CloseIO} closes.

One module per concern: L{streams} (the reader and the output sinks),
L{fifo}, L{drain} (exit after output), L{processio} (the life of a
process's stdio), L{pipes}, L{binary}, L{console} and L{create}, which
chooses among them. This package imports nothing itself.
"""
