"""panconv-lenet: an example third-party panconv plugin."""
