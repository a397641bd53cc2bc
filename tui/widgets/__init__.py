"""The monitor's widgets: the header, a refillable table, and one panel per tab."""
