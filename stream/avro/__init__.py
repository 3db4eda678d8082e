"""The input format: the bundled Avro schema, schemaless and Confluent wire framing, decoding, and writer
schemas from a schema registry (the one I/O module here, `registry`)."""
