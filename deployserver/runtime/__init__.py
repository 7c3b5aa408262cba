"""Cell runtimes: one backend per engine behind the CellRuntime interface."""
