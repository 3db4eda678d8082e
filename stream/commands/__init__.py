"""One module per `capi-stream` subcommand; each exposes `register(subparsers)`."""
