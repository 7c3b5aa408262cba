"""The Open Inference Protocol's gRPC service: its definition (``inference.proto``), the
stubs generated from it, and the cell's servicer, which answers as the V2 REST endpoints do."""
