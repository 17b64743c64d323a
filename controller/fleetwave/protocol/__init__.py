"""The device wire protocol (DESIGN.md section 2): message models and parsing, no I/O."""
