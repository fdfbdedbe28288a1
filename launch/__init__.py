"""Launch: config composition, the `sacae` CLI, the serial and distributed training loops."""
