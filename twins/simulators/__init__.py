"""OPC-UA simulators: AI4I 2020 plant machines and PhysioNet 2019 bedside monitors (``python -m twins.simulators``)."""
