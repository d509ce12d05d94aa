import { describe, expect, it } from 'vitest';
import { parseCgroupFile } from '../../src/attestation/cgroup.js';

// Container ids and pod UIDs as runtimes print them (64 hex; UID with dashes, systemd with underscores).
const CID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const CID2 = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';
const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID_ = UID.replaceAll('-', '_');
const KIND_NODE = '93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26';

const v1 = (path: string, v2Line = '0::/') =>
  ['12:pids', '11:hugetlb', '10:net_prio', '9:perf_event', '8:net_cls', '7:freezer', '6:devices', '5:memory', '4:blkio', '3:cpuacct', '2:cpu', '1:cpuset']
    .map((h) => `${h}:${path}`)
    .concat(`13:name=systemd:${path}`, v2Line)
    .join('\n') + '\n';

const ROWS: { name: string; text: string; want: { podUid?: string; containerId: string } | undefined }[] = [
  // containerd
  { name: 'containerd, cgroup v1, cgroupfs driver', text: v1(`/kubepods/burstable/pod${UID}/${CID}`), want: { podUid: UID, containerId: CID } },
  {
    name: 'containerd in kind (cgroup v1 nested under the node container, v2 line elsewhere)',
    text: v1(`/docker/${KIND_NODE}/kubepods/besteffort/pod${UID}/${CID}`, `0::/docker/${KIND_NODE}/system.slice/containerd.service`),
    want: { podUid: UID, containerId: CID },
  },
  {
    name: 'containerd, cgroup v1, systemd driver',
    text: v1(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope`),
    want: { podUid: UID, containerId: CID },
  },
  {
    name: 'containerd, cgroup v2, systemd driver',
    text: `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope\n`,
    want: { podUid: UID, containerId: CID },
  },
  { name: 'containerd, cgroup v2, systemd driver, Guaranteed QoS (no QoS slice)', text: `0::/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${CID}.scope\n`, want: { podUid: UID, containerId: CID } },
  { name: 'containerd, cgroup v2, cgroupfs driver', text: `0::/kubepods/besteffort/pod${UID}/${CID}\n`, want: { podUid: UID, containerId: CID } },
  {
    name: 'containerd, systemd names under a cgroupfs path (slice:runtime:id)',
    text: `0::/system.slice/containerd.service/kubepods-besteffort-pod${UID_}.slice:cri-containerd:${CID}\n`,
    want: { podUid: UID, containerId: CID },
  },
  { name: 'containerd, cgroup v2 with a cgroup namespace (relative path)', text: `0::/../../pod${UID}/${CID}\n`, want: { podUid: UID, containerId: CID } },
  {
    name: 'static pod (32-hex config hash as UID)',
    text: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6e2ea12e4ec5ba1d8e4c6f6cb1e2dd0f.slice/cri-containerd-${CID}.scope\n`,
    want: { podUid: '6e2ea12e4ec5ba1d8e4c6f6cb1e2dd0f', containerId: CID },
  },
  // CRI-O
  {
    name: 'CRI-O, cgroup v1, systemd driver',
    text: v1(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope`),
    want: { podUid: UID, containerId: CID },
  },
  {
    name: 'CRI-O, cgroup v2, systemd driver',
    text: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope\n`,
    want: { podUid: UID, containerId: CID },
  },
  { name: 'CRI-O, cgroup v2 inside a cgroup namespace (no pod element: found by id)', text: `0::/../crio-${CID2}.scope\n`, want: { containerId: CID2 } },
  { name: 'CRI-O conmon (the runtime monitor, not the container)', text: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-conmon-${CID}.scope\n`, want: undefined },
  // Docker (dockershim / cri-dockerd)
  {
    name: 'Docker, cgroup v1, systemd driver',
    text: v1(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${CID}.scope`),
    want: { podUid: UID, containerId: CID },
  },
  { name: 'Docker, cgroup v1, cgroupfs driver', text: v1(`/kubepods/burstable/pod${UID}/${CID}`), want: { podUid: UID, containerId: CID } },
  { name: 'Docker container outside Kubernetes, systemd (found by id, then in no pod)', text: `0::/system.slice/docker-${CID}.scope\n`, want: { containerId: CID } },
  { name: 'Docker container outside Kubernetes, cgroupfs', text: v1(`/docker/${CID}`), want: undefined },
  // Not in a container
  { name: 'host process, cgroup v2', text: '0::/user.slice/user-1000.slice/session-3.scope\n', want: undefined },
  { name: 'host service, cgroup v2', text: '0::/system.slice/sshd.service\n', want: undefined },
  { name: 'this CI machine (cgroup v1 hybrid)', text: '9:name=systemd:/\n8:pids:/\n4:memory:/process_api/67ca533dda67c040b238836382a5a8b4\n1:cpu:/\n0::/\n', want: undefined },
  { name: 'the pod slice itself (pause/sandbox parent, no container)', text: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice\n`, want: undefined },
  { name: 'empty file', text: '', want: undefined },
];

describe('cgroup parsing: pod UID and container ID from /proc/<pid>/cgroup (table)', () => {
  it.each(ROWS)('$name', ({ text, want }) => {
    expect(parseCgroupFile(text, 42)).toEqual(want);
  });

  it('refuses a process whose cgroups name two different containers', () => {
    const text = `4:memory:/kubepods/burstable/pod${UID}/${CID}\n3:cpu:/kubepods/burstable/pod${UID}/${CID2}\n`;
    expect(() => parseCgroupFile(text, 42)).toThrow(expect.objectContaining({ code: 'SDS_ERR_ATTESTATION_FAILED' }));
  });
});
