"""What operators and developers run beside the pipeline, one module per tool, named after its command."""
