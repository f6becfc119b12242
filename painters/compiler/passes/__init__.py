"""Graph passes (onnx-ir InPlacePass subclasses), one job each."""
