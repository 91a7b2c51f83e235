// Preloaded into FDM Monster by the lab (node --require): it listens on 0.0.0.0 whatever it is
// told (1.9: server.host.js), and a lab service binds only loopback.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && args[1] === "0.0.0.0") {
    args[1] = "127.0.0.1";
  }
  return listen.apply(this, args);
};
