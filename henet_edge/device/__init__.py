"""Everything that runs on the Raspberry Pi. Never imports TensorFlow or Keras."""
