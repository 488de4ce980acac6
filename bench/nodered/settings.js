// Node-RED settings for the bench peer (bench/nodered_peer.py): no editor, no HTTP server,
// nothing that reaches outside this machine. The flow file sits in the run's userDir.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    flowFilePretty: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    uiHost: "127.0.0.1",
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    functionExternalModules: false,
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false },
        modules: { allowInstall: false },
    },
    exportGlobalContextKeys: false,
    logging: {
        console: { level: process.env.NODERED_LOG_LEVEL || "warn", metrics: false, audit: false },
    },
};
