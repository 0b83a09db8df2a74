variable "subject_kind" {
  type        = string
  description = "Kubernetes subject kind of the CD identity: User or Group."

  validation {
    condition     = contains(["User", "Group"], var.subject_kind)
    error_message = "subject_kind must be User or Group."
  }
}

variable "subject_name" {
  type        = string
  description = "Kubernetes user or group name the cloud gives the CD identity (EKS: an access entry's group; GKE: the Google service account's email)."
}

variable "app_namespace" {
  type        = string
  description = "PEFM's namespace, where CD applies the Knative Services, Jobs and the Canary."
  default     = "pefm"
}

variable "knative_namespace" {
  type        = string
  description = "Namespace of Knative Serving, whose config-features ConfigMap the GPU overlay sets."
  default     = "knative-serving"
}

variable "flagger_namespace" {
  type        = string
  description = "Namespace of Flagger, whose Deployment CD reads for its -metrics-server (the knative module's flagger_namespace)."
  default     = "flagger-system"
}

variable "flagger_deployment" {
  type        = string
  description = "Name of Flagger's Deployment (the Helm release's, flagger)."
  default     = "flagger"
}
