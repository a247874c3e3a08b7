"""Host side of sqgen: protocol, transports, device driver, compressors and the CLI."""
