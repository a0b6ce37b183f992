// A standard OPC-UA server NOT written by TwinLedger: node-opcua (pinned in package.json), the way a machine builder
// would expose a press. Used by tests/integration/test_opcua_foreign_server.py.
//
//   node server.js --port P --journal FILE [--rate 10] [--no-history]
//
// Namespace "urn:foreign:press", object Press1, variables (string node ids "Press1.<name>") of several standard
// scalar types, all written together at --rate Hz with the tick's time as SourceTimestamp (ms, strictly increasing,
// continued after the journal's last one on a restart):
//   Temperature Double, Pressure Float, Count Int32, Speed UInt16, Running Boolean (the same value many ticks in a
//   row: only the timestamp changes), Vibration Double (every 10th value UncertainLastUsableValue, every 25th
//   BadSensorFailure without a value).
// History: node-opcua's own historian (installHistoricalDataNode, HistoryRead raw by time range with continuation
// points). It keeps values in memory only, so a restarted node-opcua server would have forgotten them: this script
// appends every value to the journal (one JSON line, written before the value is set) and, at start, pushes the
// journal back into node-opcua's historian — what a real historian's storage does. The journal is also the
// server's own count of what it published, which the test compares with the bridge's.
// Temperature is an AnalogItem with EngineeringUnits (°C) and an EURange, as PLC gateways expose analog values.
// --no-history: a server that keeps none (no historizing, no HistoryRead access): what a PLC without a historian
// answers; the journal is still written (the test's count) but never pushed back into a historian.
// Prints {"event":"ready","endpoint":...} once it listens. SIGKILL loses nothing published (journal first).
// SIGUSR1 pauses production (still serving), SIGUSR2 resumes, SIGTERM stops.
"use strict";
const fs = require("fs");
const {
    OPCUAServer, Variant, DataType, StatusCodes, DataValue, MessageSecurityMode, SecurityPolicy, standardUnits,
} = require("node-opcua");

function arg(name, dflt) {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : dflt;
}
const port = Number(arg("--port", "4840"));
const journalPath = arg("--journal");
const rate = Number(arg("--rate", "10"));
const history = !process.argv.includes("--no-history");
if (!journalPath) throw new Error("--journal FILE is required");

const SIGNALS = {
    Temperature: DataType.Double, Pressure: DataType.Float, Count: DataType.Int32, Speed: DataType.UInt16,
    Running: DataType.Boolean, Vibration: DataType.Double,
};

function valueOf(name, n) {
    switch (name) {
        case "Temperature": return Math.round((60 + 5 * Math.sin(n / 20)) * 1000) / 1000;
        case "Pressure": return Math.fround(2.5 + 0.25 * Math.cos(n / 7));
        case "Count": return n;
        case "Speed": return 1400 + (n % 50);
        case "Running": return Math.floor(n / 30) % 4 !== 3;
        case "Vibration": return Math.round((0.2 + 0.05 * Math.sin(n / 3)) * 10000) / 10000;
    }
    throw new Error(name);
}

function statusOf(name, n) {
    if (name !== "Vibration") return StatusCodes.Good;
    if (n % 25 === 0) return StatusCodes.BadSensorFailure;
    if (n % 10 === 0) return StatusCodes.UncertainLastUsableValue;
    return StatusCodes.Good;
}

function readJournal() {
    if (!fs.existsSync(journalPath)) return [];
    const out = [];
    for (const line of fs.readFileSync(journalPath, "utf8").split("\n")) {
        if (!line) continue;
        try { out.push(JSON.parse(line)); } catch (e) { /* a line cut short by a SIGKILL: never published */ }
    }
    return out;
}

function dataValueOf(rec) {
    const status = StatusCodes[rec.status] || StatusCodes.Good;
    return new DataValue({
        value: rec.value === null ? new Variant({ dataType: DataType.Null }) : new Variant({ dataType: SIGNALS[rec.name], value: rec.value }),
        statusCode: status, sourceTimestamp: new Date(rec.ts_ms), serverTimestamp: new Date(rec.ts_ms),
    });
}

(async () => {
    const server = new OPCUAServer({
        port, hostname: "127.0.0.1", resourcePath: "/foreign",
        securityModes: [MessageSecurityMode.None], securityPolicies: [SecurityPolicy.None], allowAnonymous: true,
        serverInfo: { applicationUri: "urn:foreign:press:server", productUri: "urn:foreign:press" },
        buildInfo: { productName: "foreign press (node-opcua)" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:foreign:press");
    const press = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Press1", nodeId: "s=Press1" });
    const vars = {};
    const journal = readJournal();
    for (const [name, dataType] of Object.entries(SIGNALS)) {
        const access = history ? "CurrentRead | HistoryRead" : "CurrentRead";
        const options = {
            componentOf: press, browseName: name, nodeId: `s=Press1.${name}`, dataType,
            accessLevel: access, userAccessLevel: access,
        };
        const v = name === "Temperature"
            ? ns.addAnalogDataItem({ ...options, engineeringUnits: standardUnits.degree_celsius,
                                     engineeringUnitsRange: { low: -50, high: 200 } })
            : ns.addVariable(options);
        if (history) {
            addressSpace.installHistoricalDataNode(v, { maxOnlineValues: 1000000 });
            for (const rec of journal) {  // the history this server published before it was restarted
                if (rec.name === name) await v.varHistorian.push(dataValueOf(rec));
            }
        }
        vars[name] = v;
    }
    let n = journal.length ? Math.max(...journal.map((r) => r.n)) : 0;
    let lastMs = journal.length ? Math.max(...journal.map((r) => r.ts_ms)) : 0;
    for (const rec of journal) {  // the current value of each variable: its last one
        if (rec.n === n) vars[rec.name].setValueFromSource(dataValueOf(rec).value, dataValueOf(rec).statusCode, new Date(rec.ts_ms));
    }
    const fd = fs.openSync(journalPath, "a");
    await server.start();
    console.log(JSON.stringify({ event: "ready", endpoint: server.getEndpointUrl(), resumed_at: n, variables: Object.keys(SIGNALS).length }));

    let paused = false;  // SIGUSR1 pauses production (the server keeps serving subscriptions and HistoryRead)
    process.on("SIGUSR1", () => { paused = true; });
    process.on("SIGUSR2", () => { paused = false; });
    setInterval(() => {
        if (paused) return;
        n += 1;
        const ts = Math.max(Date.now(), lastMs + 1);
        lastMs = ts;
        const recs = [];
        for (const name of Object.keys(SIGNALS)) {
            const status = statusOf(name, n);
            const value = status === StatusCodes.BadSensorFailure ? null : valueOf(name, n);
            recs.push({ n, name, ts_ms: ts, value, status: status.name });
        }
        fs.writeSync(fd, recs.map((r) => JSON.stringify(r)).join("\n") + "\n");  // journal first (the count, the history)
        for (const rec of recs) {
            const dv = dataValueOf(rec);
            vars[rec.name].setValueFromSource(dv.value, dv.statusCode, new Date(rec.ts_ms));
        }
    }, 1000 / rate);

    for (const sig of ["SIGTERM", "SIGINT"]) {
        process.on(sig, async () => { await server.shutdown(100); process.exit(0); });
    }
})().catch((e) => { console.error(e); process.exit(1); });
