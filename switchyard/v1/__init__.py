"""Generated protobuf/gRPC code for the contracts in protos/switchyard/v1 (`make protos`)."""
