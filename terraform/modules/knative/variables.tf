variable "platform" {
  type        = string
  description = "The cluster module's platform output (eks, gke, aks or existing): picks the GPU runtime handler and whether NVIDIA's device plugin is needed."

  validation {
    condition     = contains(["eks", "gke", "aks", "existing"], var.platform)
    error_message = "platform must be one of eks, gke, aks, existing."
  }
}

variable "knative_version" {
  type        = string
  description = "Knative release (Serving, Kourier and Eventing share it), without the knative-v prefix."
  default     = "1.16.0"
}

variable "domain" {
  type        = string
  description = "DNS domain the Knative routes are served under (config-domain); null keeps Knative's default."
  default     = null
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "The cluster module's gpu_node_selector: labels of the GPU nodes."
}

variable "gpu_node_taint" {
  type = object({
    key    = string
    value  = string
    effect = string
  })
  description = "The cluster module's gpu_node_taint: the taint GPU pods must tolerate."
}

variable "nvidia_runtime_handler" {
  type        = string
  description = "containerd runtime handler behind the `nvidia` RuntimeClass the GPU overlay names; null picks the platform's (eks: nvidia, aks: nvidia-container-runtime, gke: runc, whose GPU nodes inject the devices themselves, existing: nvidia as the GPU operator sets up)."
  default     = null
}

variable "install_nvidia_device_plugin" {
  type        = bool
  description = "Install NVIDIA's device plugin Helm chart; null installs it on eks and aks only: GKE runs its own, and an existing cluster's GPU nodes usually have the GPU operator's (set true on one without it)."
  default     = null
}

variable "nvidia_device_plugin_version" {
  type        = string
  description = "Version of the nvidia-device-plugin Helm chart."
  default     = "0.17.1"
}

variable "prometheus_url" {
  type        = string
  description = "Prometheus that Flagger queries (its metricsServer): the monitoring module's prometheus_url."
}

variable "flagger_chart_version" {
  type        = string
  description = "Version of the flagger Helm chart (chart and app versions match: 1.44.0 is Flagger v1.44.0, whose CRDs PEFM's Canary is written against)."
  default     = "1.44.0"
}
