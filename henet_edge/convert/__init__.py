"""Conversion of Keras models to float32 and full-integer int8 TFLite bundles."""
