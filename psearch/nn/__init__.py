"""Network parts shared by the detector, re-ID and joint models: the ResNet C4 trunk, detection
targets, image tensors and every identity loss (OIM, TOIM, softmax, OLP, HEP, C2HEP)."""
