"""panconv-documents: CascadeTabNet table detection and structure recognition on a two-stage detection
toolkit (Faster / Mask / Cascade R-CNN on torchvision.ops), rendered and real-PDF table data."""
