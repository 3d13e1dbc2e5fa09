"""Built-in synthetic worlds with known ground truth (the default data of the CPU recipes)."""
