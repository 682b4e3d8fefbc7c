// A PLC-side OPC UA client that is not asyncua: node-opcua, against a running cell-gateway.
//
// Run by tests/interop/test_node_opcua.py; prints one JSON object per line ({"step": ...}) for the test
// to assert on, and exits non-zero on any failure.
//
// Environment:
//   ENDPOINT              opc.tcp://127.0.0.1:<port>/cell-gateway/
//   USER, PASSWORD        the gateway account (username/password token)
//   PKI_DIR               node-opcua's own PKI folder; the gateway's certificate is in PKI_DIR/trusted/certs
//   CERT_FILE, KEY_FILE   this client's application certificate (PEM) and key, trusted by the gateway
//   APP_URI               the ApplicationUri in that certificate
//   CALLS                 JSON: [{"station": "M1", "method": "CycleStarted", "args": [["String", "E-1"], ...]}]
//                         (a ["DateTime", null] argument is sent as a Null variant)
//   EXPECT_EVENTS         comma-separated ReportEventIds of the RejectionEventType events to wait for
"use strict";
const {
    OPCUAClient, MessageSecurityMode, SecurityPolicy, UserTokenType, AttributeIds, TimestampsToReturn,
    constructEventFilter, ofType, DataType, VariantArrayType, NodeClass, BrowseDirection,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const NS_URI = "urn:cell-gateway";
const REPORT_FIELDS = ["Reason", "Station", "Pallet", "Serial", "Job", "ReportEventId"];

function emit(step, data) {
    console.log(JSON.stringify({ step, ...data }));
}

function variant([type, value]) {
    if (value === null) return { dataType: DataType.Null, value: null };
    if (type === "DateTime") return { dataType: DataType.DateTime, value: new Date(value) };
    if (type === "String[]") return { dataType: DataType.String, arrayType: VariantArrayType.Array, value };
    return { dataType: DataType[type], value };
}

async function childrenByName(session, nodeId) {
    const result = await session.browse({
        nodeId, browseDirection: BrowseDirection.Forward, includeSubtypes: true, resultMask: 63,
        referenceTypeId: "HierarchicalReferences",
    });
    return Object.fromEntries(result.references.map((r) => [r.browseName.name, r]));
}

async function main() {
    const certificateManager = new OPCUACertificateManager({
        rootFolder: process.env.PKI_DIR,
        automaticallyAcceptUnknownCertificate: false, // the gateway's certificate was put in trusted/certs
    });
    await certificateManager.initialize();
    const client = OPCUAClient.create({
        applicationName: "cell-gateway-interop",
        applicationUri: process.env.APP_URI,
        certificateFile: process.env.CERT_FILE,
        privateKeyFile: process.env.KEY_FILE,
        clientCertificateManager: certificateManager,
        securityMode: MessageSecurityMode.SignAndEncrypt,
        securityPolicy: SecurityPolicy.Basic256Sha256,
        endpointMustExist: true,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
    await client.connect(process.env.ENDPOINT);
    emit("connected", { securityMode: "SignAndEncrypt", securityPolicy: "Basic256Sha256" });
    const session = await client.createSession({
        type: UserTokenType.UserName, userName: process.env.USER, password: process.env.PASSWORD,
    });
    emit("session", { user: process.env.USER });

    try {
        const namespaces = (await session.read({ nodeId: "i=2255", attributeId: AttributeIds.Value })).value.value;
        const ns = namespaces.indexOf(NS_URI);
        emit("namespace", { uri: NS_URI, index: ns });

        // Browse Objects -> Cell -> Stations -> each station, by browse name.
        const objects = await childrenByName(session, "i=85");
        const cellId = objects["Cell"].nodeId;
        const cell = await childrenByName(session, cellId);
        const stations = await childrenByName(session, cell["Stations"].nodeId);
        // The contract's objects are in the gateway's namespace; the standard faces (JobManagement, ...) sit
        // beside them in their own namespaces.
        const own = Object.values(cell).filter((r) => r.browseName.namespaceIndex === ns).map((r) => r.browseName.name);
        emit("browse", { cell: own.sort(), stations: Object.keys(stations).sort() });
        const m1 = await childrenByName(session, stations["M1"].nodeId);
        const kind = await session.read({ nodeId: m1["Kind"].nodeId, attributeId: AttributeIds.Value });
        const methods = Object.values(m1).filter((r) => r.nodeClass === NodeClass.Method).map((r) => r.browseName.name);
        const cycleEnded = await childrenByName(session, m1["CycleEnded"].nodeId);
        const inputs = (await session.read({
            nodeId: cycleEnded["InputArguments"].nodeId, attributeId: AttributeIds.Value,
        })).value.value;
        emit("station", {
            name: "M1",
            kind: kind.value.value,
            methods: methods.sort(),
            cycleEndedInputs: inputs.map((a) => `${a.name}:${DataType[a.dataType.value]}`),
        });

        // Subscribe to RejectionEventType on Cell, with its own fields.
        const subtypes = await session.browse({
            nodeId: "i=2041", referenceTypeId: "HasSubtype", includeSubtypes: true,
            browseDirection: BrowseDirection.Forward, resultMask: 63,
        });
        const rejection = subtypes.references.find((r) => r.browseName.name === "RejectionEventType").nodeId;
        const fields = ["EventId", "EventType", "Message", "Severity", ...REPORT_FIELDS.map((f) => `${ns}:${f}`)];
        const subscription = await session.createSubscription2({
            requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20,
            maxNotificationsPerPublish: 100, publishingEnabled: true, priority: 1,
        });
        const item = await subscription.monitor(
            { nodeId: cellId, attributeId: AttributeIds.EventNotifier },
            { queueSize: 100, filter: constructEventFilter(fields, ofType(rejection)), discardOldest: false },
            TimestampsToReturn.Neither,
        );
        const expected = new Set((process.env.EXPECT_EVENTS || "").split(",").filter((s) => s));
        const received = new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`events not received: ${[...expected]}`)), 15000);
            item.on("changed", (values) => {
                const event = Object.fromEntries(fields.map((f, i) => [f.replace(/^\d+:/, ""), values[i].value]));
                emit("event", {
                    type: "RejectionEventType",
                    eventType: event.EventType.toString(),
                    message: event.Message.text,
                    severity: event.Severity,
                    ...Object.fromEntries(REPORT_FIELDS.map((f) => [f, event[f]])),
                });
                expected.delete(event.ReportEventId);
                if (expected.size === 0) {
                    clearTimeout(timer);
                    resolve();
                }
            });
        });
        emit("subscribed", { eventType: rejection.toString() });

        // Station methods, in order.
        for (const call of JSON.parse(process.env.CALLS)) {
            const station = stations[call.station] ? await childrenByName(session, stations[call.station].nodeId) : {};
            const result = await session.call({
                objectId: stations[call.station].nodeId,
                methodId: station[call.method].nodeId,
                inputArguments: call.args.map(variant),
            });
            emit("call", {
                station: call.station,
                method: call.method,
                status: result.statusCode.name,
                inputArgumentResults: (result.inputArgumentResults || []).map((s) => s.name),
                outputs: (result.outputArguments || []).map((v) => v.value),
            });
        }
        await received;
        await subscription.terminate();
    } finally {
        await session.close();
        await client.disconnect();
    }
    emit("done", {});
}

const hard = setTimeout(() => {
    emit("error", { message: "hard timeout" });
    process.exit(3);
}, 45000);
main()
    .catch((err) => {
        emit("error", { message: String(err && err.message ? err.message : err).split("\n")[0] });
        process.exitCode = 1;
    })
    .finally(() => clearTimeout(hard));
