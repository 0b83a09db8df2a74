variable "platform" {
  type        = string
  description = "The cluster module's platform output (eks, gke, aks or existing)."
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

variable "domain" {
  type        = string
  description = "DNS domain the Knative routes are served under (config-domain); null keeps Knative's default."
  default     = null
}

variable "managed_database_url" {
  type        = string
  description = "A managed PostgreSQL URL to use instead of installing TimescaleDB; null installs TimescaleDB."
  default     = null
  sensitive   = true
}
