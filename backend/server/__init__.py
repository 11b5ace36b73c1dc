"""Starting tritonserver from a virtual environment: the launcher (backend directory, libraries,
command line), network defaults (loopback listeners, restricted administrative APIs, the admin-key
shim) and the stub reaper that cleans up after a server that went away."""
