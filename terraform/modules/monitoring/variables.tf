variable "namespace" {
  type        = string
  description = "Namespace of Prometheus, Grafana and the operator."
  default     = "monitoring"
}

variable "chart_version" {
  type        = string
  description = "Version of the kube-prometheus-stack Helm chart."
  default     = "66.3.0"
}

variable "retention" {
  type        = string
  description = "How long Prometheus keeps samples (rollout analysis reads minutes; the dashboard reads days)."
  default     = "15d"
}

variable "app_namespace" {
  type        = string
  description = "Namespace of PEFM's Knative Services, whose revision pods are scraped."
  default     = "pefm"
}

variable "storage_class" {
  type        = string
  description = "StorageClass of Prometheus' volume; null uses the cluster's default class."
  default     = null
}

variable "storage_size" {
  type        = string
  description = "Size of Prometheus' volume (samples for retention)."
  default     = "50Gi"
}
