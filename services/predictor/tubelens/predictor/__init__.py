"""The predictor service: trained models served behind one runtime interface, swapped without downtime."""
