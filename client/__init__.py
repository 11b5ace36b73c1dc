"""Plain clients of a running server, a leaf of the tree (nothing imports them but benchmarks): the
CLI (`python -m client generate ...`), generation over a gRPC stream and over HTTP generate(_stream),
exit codes, and starting a server process for scripts."""
