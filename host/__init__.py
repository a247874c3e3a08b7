"""Host side of sqgen: transports, device driver, the LeNet-5 model files (`lenet5`), MNIST (`mnist`), compressors,
training and the CLI."""
