"""The core's own Stage I components (MLP adapter, mask, decoder, projector), registered by the
built-in ``core`` plug-in exactly as a third-party package would register its own."""
