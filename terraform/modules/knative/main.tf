# Knative Serving with the Kourier ingress and Knative Eventing, applied from the pinned release
# manifests; the feature flags PEFM's Service manifests need; a `nvidia` RuntimeClass and NVIDIA's
# device plugin for the GPU overlay; Flagger (Helm, Knative provider) reading the monitoring module's
# Prometheus, which moves the traffic of PEFM's Canary.
locals {
  release = "knative-v${var.knative_version}"
  release_urls = {
    serving-crds  = "https://github.com/knative/serving/releases/download/${local.release}/serving-crds.yaml"
    serving-core  = "https://github.com/knative/serving/releases/download/${local.release}/serving-core.yaml"
    kourier       = "https://github.com/knative/net-kourier/releases/download/${local.release}/kourier.yaml"
    eventing-crds = "https://github.com/knative/eventing/releases/download/${local.release}/eventing-crds.yaml"
    eventing-core = "https://github.com/knative/eventing/releases/download/${local.release}/eventing-core.yaml"
  }

  documents = merge([
    for file, docs in data.kubectl_file_documents.release :
    { for key, body in docs.manifests : "${file}:${key}" => body }
  ]...)
  kinds      = { for key, body in local.documents : key => try(yamldecode(body).kind, "") }
  crds       = { for key, body in local.documents : key => body if local.kinds[key] == "CustomResourceDefinition" }
  namespaces = { for key, body in local.documents : key => body if local.kinds[key] == "Namespace" }
  objects = {
    for key, body in local.documents : key => body
    if !contains(["CustomResourceDefinition", "Namespace", ""], local.kinds[key])
  }

  # The podspec fields knative/overlays/gpu uses, and no more (the flags of its config-features.yaml).
  features = {
    "kubernetes.podspec-nodeselector"     = "enabled"
    "kubernetes.podspec-tolerations"      = "enabled"
    "kubernetes.podspec-runtimeclassname" = "enabled"
  }

  # containerd runtime handlers the GPU nodes define:
  # - aks: AKS writes the containerd config of N-series (GPU) nodes with
  #   default_runtime_name = "nvidia-container-runtime" and defines only the runtimes
  #   nvidia-container-runtime and untrusted there, no `runc` (Azure/AgentBaker,
  #   containerdConfigTemplateString, IsNSeriesSKU branch): a RuntimeClass naming runc fails every pod.
  # - eks: the AL2023 NVIDIA AMI configures containerd with an `nvidia` runtime.
  # - gke: GKE's GPU nodes inject the devices through their own device plugin under plain runc.
  # - existing: NVIDIA's GPU operator (container toolkit) adds an `nvidia` runtime.
  runtime_handlers = { eks = "nvidia", gke = "runc", aks = "nvidia-container-runtime", existing = "nvidia" }
  runtime_handler  = coalesce(var.nvidia_runtime_handler, local.runtime_handlers[var.platform])
  # NVIDIA's device plugin: eks and aks need it; GKE's GPU nodes run their own, and an existing
  # cluster's GPU nodes usually run the GPU operator's (a second one would advertise the GPUs twice).
  device_plugin = coalesce(var.install_nvidia_device_plugin, contains(["eks", "aks"], var.platform))
}

data "http" "release" {
  for_each = local.release_urls
  url      = each.value

  lifecycle {
    postcondition {
      condition     = self.status_code == 200
      error_message = "Downloading ${self.url} answered HTTP ${self.status_code}."
    }
  }
}

data "kubectl_file_documents" "release" {
  for_each = data.http.release
  content  = each.value.response_body
}

# CRDs, then namespaces, then everything else: each step needs the one before it. A CRD is usable
# once the API server reports it Established: wait_for holds each one until then (alekc/kubectl
# >= 2.1.2; `wait` only makes a destroy wait for the CRD to be gone).
resource "kubectl_manifest" "crds" {
  for_each          = local.crds
  yaml_body         = each.value
  server_side_apply = true
  wait              = true

  wait_for {
    condition {
      type   = "Established"
      status = "True"
    }
  }
}

resource "kubectl_manifest" "namespaces" {
  for_each          = local.namespaces
  yaml_body         = each.value
  server_side_apply = true
  depends_on        = [kubectl_manifest.crds]
}

resource "kubectl_manifest" "objects" {
  for_each          = local.objects
  yaml_body         = each.value
  server_side_apply = true
  wait_for_rollout  = true
  depends_on        = [kubectl_manifest.namespaces]
}

resource "kubernetes_config_map_v1_data" "network" {
  metadata {
    name      = "config-network"
    namespace = "knative-serving"
  }
  data       = { "ingress-class" = "kourier.ingress.networking.knative.dev" }
  force      = true
  depends_on = [kubectl_manifest.objects]
}

resource "kubernetes_config_map_v1_data" "features" {
  metadata {
    name      = "config-features"
    namespace = "knative-serving"
  }
  data       = local.features
  force      = true
  depends_on = [kubectl_manifest.objects]
}

resource "kubernetes_config_map_v1_data" "domain" {
  count = var.domain == null ? 0 : 1
  metadata {
    name      = "config-domain"
    namespace = "knative-serving"
  }
  data       = { (var.domain) = "" }
  force      = true
  depends_on = [kubectl_manifest.objects]
}

# The GPU overlay asks for runtimeClassName: nvidia; the class also carries the GPU nodes'
# selector and toleration, so any pod naming it lands on a GPU node.
# (kubectl_manifest: the kubernetes provider's RuntimeClass resource has no scheduling block.)
resource "kubectl_manifest" "nvidia_runtime_class" {
  yaml_body = yamlencode({
    apiVersion = "node.k8s.io/v1"
    kind       = "RuntimeClass"
    metadata   = { name = "nvidia" }
    handler    = local.runtime_handler
    scheduling = {
      nodeSelector = var.gpu_node_selector
      tolerations = [{
        key      = var.gpu_node_taint.key
        operator = "Equal"
        value    = var.gpu_node_taint.value
        effect   = var.gpu_node_taint.effect
      }]
    }
  })
  server_side_apply = true
}

resource "helm_release" "nvidia_device_plugin" {
  count            = local.device_plugin ? 1 : 0
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  values = [yamlencode({
    nodeSelector = var.gpu_node_selector
    tolerations = [{
      key      = var.gpu_node_taint.key
      operator = "Exists"
      effect   = var.gpu_node_taint.effect
    }]
  })]
}

# Flagger, the rollout engine on a cluster: its Knative provider moves the traffic of PEFM's Canary
# (knative/flagger/) and its analysis queries the monitoring module's Prometheus (metricsServer).
# The chart's CRDs (Canary, MetricTemplate, AlertProvider) come from its crds/ folder, which Helm
# installs with the release (and, like any crds/ folder, does not upgrade: see terraform/README.md).
# Namespace flagger-system: knative/rollout's NetworkPolicy admits the webhook calls from it.
resource "helm_release" "flagger" {
  name             = "flagger"
  repository       = "https://flagger.app"
  chart            = "flagger"
  version          = var.flagger_chart_version
  namespace        = "flagger-system"
  create_namespace = true
  skip_crds        = false

  values = [yamlencode({
    meshProvider  = "knative"
    metricsServer = var.prometheus_url
    crd           = { create = false } # the crds/ folder installs them; true would render them twice
  })]

  depends_on = [kubectl_manifest.objects]
}

# Flagger's chart grants nothing to namespace admins: this role aggregates its custom resources into
# the built-in admin and edit ClusterRoles, so whoever administers PEFM's namespace (CD included) can
# apply the Canary and its MetricTemplates.
resource "kubernetes_cluster_role_v1" "flagger_resources" {
  metadata {
    name = "pefm-flagger-resources"
    labels = {
      "rbac.authorization.k8s.io/aggregate-to-admin" = "true"
      "rbac.authorization.k8s.io/aggregate-to-edit"  = "true"
    }
  }
  rule {
    api_groups = ["flagger.app"]
    resources  = ["canaries", "metrictemplates", "alertproviders"]
    verbs      = ["get", "list", "watch", "create", "update", "patch", "delete"]
  }
  rule {
    api_groups = ["flagger.app"]
    resources  = ["canaries/status"]
    verbs      = ["get"]
  }
}
