"""Built-in tasks for `fisherprec compare` and the kinematics experiments."""
