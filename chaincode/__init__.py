"""chaincode package."""
