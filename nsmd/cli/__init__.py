"""The `nsmd` command: the daemon (`run`) and the client commands that talk to it."""
