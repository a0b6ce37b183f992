"""TwinLedger's Flower App: the components live in the installed ``federated`` package."""
