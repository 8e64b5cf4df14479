// Entry point of the changescope workbench (built by build.mjs into changescope/serve/static/app.js).

import "ol/ol.css";
import "./style.css";

import { App } from "./app";

const root = document.getElementById("app");
if (root) void new App(root).start();
