variable "kubeconfig_path" {
  type        = string
  description = "Path of the kubeconfig that reaches the cluster (~ is expanded)."
}

variable "kubeconfig_context" {
  type        = string
  description = "Context in the kubeconfig to use; null uses its current-context."
  default     = null
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "Labels the cluster's GPU nodes carry (NVIDIA GPU feature discovery sets nvidia.com/gpu.present)."
  default     = { "nvidia.com/gpu.present" = "true" }
}

variable "gpu_node_taint" {
  type = object({
    key    = string
    value  = string
    effect = string
  })
  description = "Taint the cluster's GPU nodes carry, which GPU pods must tolerate."
  default     = { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" }
}
