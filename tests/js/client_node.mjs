// The official JavaScript client (@kubernetes/client-node 1.x, Node.js 20) against a real axle
// server: list, create, watch, an informer and exec. Run by crates/axle/tests/js_client.rs,
// which starts the server, an agent and the pod `box`; prints one line per check.
import * as k8s from '@kubernetes/client-node';
import { PassThrough } from 'node:stream';

const kc = new k8s.KubeConfig();
kc.loadFromFile(process.env.KUBECONFIG);
const core = kc.makeApiClient(k8s.CoreV1Api);
const namespace = 'default';
const within = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms));

const pods = await core.listNamespacedPod({ namespace });
console.log(`list: ${pods.items.map((p) => p.metadata.name).includes('box')}`);

// A watch sees a ConfigMap created after it started.
const seen = new Promise((resolve, reject) => {
  new k8s.Watch(kc)
    .watch(`/api/v1/namespaces/${namespace}/configmaps`, {}, (type, obj) => {
      if (type === 'ADDED' && obj.metadata.name === 'from-js') resolve(type);
    }, (err) => err && reject(err))
    .catch(reject);
});
await new Promise((r) => setTimeout(r, 500));
await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'from-js' }, data: { speed: 'limited' } } });
console.log(`watch: ${await Promise.race([seen, within(10000, 'watch event')])}`);

// An informer lists and then follows.
const informer = k8s.makeInformer(kc, `/api/v1/namespaces/${namespace}/pods`, () => core.listNamespacedPod({ namespace }));
const added = new Promise((resolve) => informer.on('add', (pod) => pod.metadata.name === 'box' && resolve(pod.metadata.name)));
await informer.start();
console.log(`informer: ${await Promise.race([added, within(10000, 'informer add')])}`);
await informer.stop();

// exec: output, and the exit status as a Status.
const stdout = new PassThrough();
let output = '';
stdout.on('data', (chunk) => (output += chunk.toString()));
const status = await Promise.race([
  new Promise((resolve, reject) => {
    new k8s.Exec(kc)
      .exec(namespace, 'box', 'main', ['sh', '-c', 'echo from-js; exit 3'], stdout, null, null, false, resolve)
      .catch(reject);
  }),
  within(20000, 'exec status'),
]);
console.log(`exec: ${output.trim()} ${status.status} ${status.reason} ${status.details?.causes?.[0]?.message}`);
process.exit(0);
