// An MES-side OPC UA client that is not asyncua: node-opcua driving the gateway's Machinery Job Management.
//
// Run by tests/interop/test_node_opcua_jobs.py; prints one JSON object per line ({"step": ...}) for the
// test to assert on, and exits non-zero on any failure.
//
// Environment:
//   ENDPOINT          opc.tcp://127.0.0.1:<port>/cell-gateway/ (demo profile: SecurityPolicy None)
//   USER, PASSWORD    the gateway account (username/password token)
//   PKI_DIR           node-opcua's own PKI folder
//   JOB               the job order id to store
//   CALLS             JSON: station calls that produce the job's units, as client.js takes them
//   PAUSED_CALLS      JSON: station calls made while the job is paused (the last one must be refused)
"use strict";
const {
    OPCUAClient, MessageSecurityMode, SecurityPolicy, UserTokenType, AttributeIds, DataType, VariantArrayType,
    BrowseDirection, StatusCodes, resolveNodeId, constructEventFilter, ofType, TimestampsToReturn,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const NS_URI = "urn:cell-gateway";
const JOBS_URI = "http://opcfoundation.org/UA/Machinery/Jobs/";
const ISA95_URI = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/";

function emit(step, data) {
    console.log(JSON.stringify({ step, ...data }));
}

function variant([type, value]) {
    if (value === null) return { dataType: DataType.Null, value: null };
    if (type === "String[]") return { dataType: DataType.String, arrayType: VariantArrayType.Array, value };
    return { dataType: DataType[type], value };
}

// UInt64 comes back from node-opcua as [high, low].
function uint64(value) {
    return Array.isArray(value) ? value[0] * 2 ** 32 + value[1] : Number(value);
}

async function children(session, nodeId) {
    const result = await session.browse({
        nodeId, browseDirection: BrowseDirection.Forward, includeSubtypes: true, resultMask: 63,
        referenceTypeId: "HierarchicalReferences",
    });
    return result.references;
}

// Objects and two levels below it, breadth first, for the object whose TypeDefinition is JobManagementType.
async function findByType(session, typeId) {
    let level = [resolveNodeId("i=85")];
    for (let depth = 0; depth < 2; depth += 1) {
        const below = [];
        for (const nodeId of level) {
            for (const ref of await children(session, nodeId)) {
                if (ref.typeDefinition.toString() === typeId) return ref;
                if (ref.nodeClass === 1) below.push(ref.nodeId); // NodeClass.Object
            }
        }
        level = below;
    }
    throw new Error(`no object of type ${typeId} under Objects`);
}

async function main() {
    const certificateManager = new OPCUACertificateManager({
        rootFolder: process.env.PKI_DIR, automaticallyAcceptUnknownCertificate: true,
    });
    await certificateManager.initialize();
    const client = OPCUAClient.create({
        applicationName: "cell-gateway-interop-mes",
        clientCertificateManager: certificateManager,
        securityMode: MessageSecurityMode.None,
        securityPolicy: SecurityPolicy.None,
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    });
    await client.connect(process.env.ENDPOINT);
    const session = await client.createSession({
        type: UserTokenType.UserName, userName: process.env.USER, password: process.env.PASSWORD,
    });
    try {
        const namespaces = (await session.read({ nodeId: "i=2255", attributeId: AttributeIds.Value })).value.value;
        const [gw, jobs, isa] = [NS_URI, JOBS_URI, ISA95_URI].map((uri) => namespaces.indexOf(uri));
        const found = await findByType(session, `ns=${jobs};i=1003`);
        emit("found", { nodeId: found.nodeId.toString(), browseName: found.browseName.toString() });

        const byName = async (nodeId, ns) => Object.fromEntries(
            (await children(session, nodeId)).filter((r) => r.browseName.namespaceIndex === ns)
                .map((r) => [r.browseName.name, r.nodeId]),
        );
        const jm = await byName(found.nodeId, jobs);
        const control = jm.JobOrderControl, results = jm.JobOrderResults;
        const methods = { ...(await byName(control, isa)), ...(await byName(results, isa)) };
        emit("methods", { control: Object.keys(await byName(control, isa)).sort() });

        const noComment = { dataType: DataType.LocalizedText, arrayType: VariantArrayType.Array, value: [] };
        const call = async (objectId, name, inputArguments) => {
            const result = await session.call({ objectId, methodId: methods[name], inputArguments });
            const outputs = result.outputArguments || [];
            const returnStatus = outputs.length ? uint64(outputs[outputs.length - 1].value) : null;
            return { status: result.statusCode.name, returnStatus, outputs };
        };
        const command = async (name, jobId, comment) => {
            const text = comment ? { ...noComment, value: [{ text: comment, locale: "en" }] } : noComment;
            const answer = await call(control, name, [{ dataType: DataType.String, value: jobId }, text]);
            emit("command", { method: name, job: jobId, status: answer.status, returnStatus: answer.returnStatus });
        };
        const listed = async () => {
            const value = (await session.read({ nodeId: methods.JobOrderList, attributeId: AttributeIds.Value })).value.value || [];
            return Object.fromEntries(value.map((e) => [e.jobOrder.jobOrderID, e.state[0].stateText.text]));
        };
        // JobOrderList is written after the commit: read until the job shows the state (each read paces).
        const waitListed = async (jobId, state) => {
            const until = Date.now() + 5000;
            let now = await listed();
            while (now[jobId] !== state) {
                if (Date.now() > until) throw new Error(`${jobId} never ${state} in JobOrderList: ${JSON.stringify(now)}`);
                now = await listed();
            }
            emit("listed", { job: jobId, state });
        };
        const job = process.env.JOB;

        const order = await session.constructExtensionObject(resolveNodeId(`ns=${isa};i=3008`), {
            jobOrderID: job,
            priority: 3,
            endTime: new Date("2027-01-15T12:00:00Z"),
            jobOrderParameters: [{ ID: "Revision", value: { dataType: DataType.String, value: "C" } }],
            materialRequirements: [{ materialDefinitionID: "PN-100", materialUse: "Produced", quantity: "2" }],
        });
        const stored = await call(control, "Store", [{ dataType: DataType.ExtensionObject, value: order }, noComment]);
        emit("command", { method: "Store", job, status: stored.status, returnStatus: stored.returnStatus });
        const again = await call(control, "Store", [{ dataType: DataType.ExtensionObject, value: order }, noComment]);
        emit("command", { method: "Store", job, status: again.status, returnStatus: again.returnStatus });
        await waitListed(job, "NotAllowedToStart");
        await command("Start", job);
        await command("Start", "NO-SUCH-JOB");
        await waitListed(job, "AllowedToStart");

        for (const c of JSON.parse(process.env.CALLS)) {
            const object = c.station ? `ns=${gw};s=Cell/Stations/${c.station}` : `ns=${gw};s=Cell/Units`;
            const result = await session.call({ objectId: object, methodId: `${object}/${c.method}`, inputArguments: c.args.map(variant) });
            if (result.statusCode !== StatusCodes.Good) throw new Error(`${c.method}: ${result.statusCode.toString()}`);
        }
        emit("produced", {});
        await waitListed(job, "Running");

        const response = await call(results, "RequestJobResponseByJobOrderID", [{ dataType: DataType.String, value: job }]);
        const jobResponse = response.outputs[0].value;
        emit("response", {
            status: response.status,
            returnStatus: response.returnStatus,
            job: jobResponse.jobOrderID,
            state: jobResponse.jobState[0].stateText.text,
            actuals: Object.fromEntries(jobResponse.materialActuals.map((m) => [m.materialUse, m.quantity])),
        });

        // Where MES and SCADA tools subscribe by default: the Server object (i=2253), RejectionEventType.
        const subtypes = await session.browse({
            nodeId: "i=2041", referenceTypeId: "HasSubtype", includeSubtypes: true,
            browseDirection: BrowseDirection.Forward, resultMask: 63,
        });
        const rejection = subtypes.references.find((r) => r.browseName.name === "RejectionEventType").nodeId;
        const fields = ["EventId", "SourceNode", "Message", `${gw}:Reason`, `${gw}:Job`, `${gw}:ReportEventId`];
        const subscription = await session.createSubscription2({
            requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20,
            maxNotificationsPerPublish: 100, publishingEnabled: true, priority: 1,
        });
        const onServer = await subscription.monitor(
            { nodeId: "i=2253", attributeId: AttributeIds.EventNotifier },
            { queueSize: 100, filter: constructEventFilter(fields, ofType(rejection)), discardOldest: false },
            TimestampsToReturn.Neither,
        );
        const paused = JSON.parse(process.env.PAUSED_CALLS);
        const expected = paused[paused.length - 1].args[0][1];
        const refusal = new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no RejectionEventType ${expected} on the Server object`)), 15000);
            onServer.on("changed", (values) => {
                const event = Object.fromEntries(fields.map((f, i) => [f.replace(/^\d+:/, ""), values[i].value]));
                if (event.ReportEventId !== expected) return;
                clearTimeout(timer);
                resolve(event);
            });
        });

        await command("Pause", job, "fixture change");
        await waitListed(job, "Interrupted");
        for (const c of paused) {
            const object = `ns=${gw};s=Cell/Stations/${c.station}`;
            const result = await session.call({ objectId: object, methodId: `${object}/${c.method}`, inputArguments: c.args.map(variant) });
            emit("paused_call", { method: c.method, status: result.statusCode.name });
        }
        const event = await refusal;
        emit("server_event", {
            reason: event.Reason, job: event.Job, reportEventId: event.ReportEventId,
            sourceNode: event.SourceNode.toString(), message: event.Message.text,
        });
        await subscription.terminate();
        await command("Resume", job);
        await waitListed(job, "Running");
        await command("Resume", job);
        await command("Abort", job, "order withdrawn");
        await waitListed(job, "Aborted");
        emit("done", {});
    } finally {
        await session.close();
        await client.disconnect();
    }
}

main().catch((error) => {
    console.error("FAILED", error);
    process.exit(1);
});
