// Swagger UI's files next to the build, so /docs loads them from this server
// (FastAPI's default page fetches them from a CDN: blank without internet).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(dirname(fileURLToPath(import.meta.url)));
const from = join(web, "node_modules", "swagger-ui-dist");
const to = join(web, "dist", "vendor", "swagger-ui");
mkdirSync(to, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"]) {
  copyFileSync(join(from, name), join(to, name));
}
console.log(`copied Swagger UI to ${to}`);
