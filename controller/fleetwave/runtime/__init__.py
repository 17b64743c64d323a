"""The runtime: gather -> plan -> execute -> persist, shared by run, operator and demo."""
