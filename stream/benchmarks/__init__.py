"""`capi-stream bench ...`: one module per benchmark; each exposes `add_arguments(parser)` and `run(args)`.

Speed and memory targets are checked here, never by timed asserts in tests.
"""
