"""Front ends that read model syntax (lavaan, Blimp) into the parameter table."""
